"""balgraph.progress: a tqdm bar on a terminal, nothing otherwise."""

import io
import sys

import pytest

from balgraph.progress import Progress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_disabled_is_a_silent_counter(capsys):
    with progress(10, desc="quiet", enabled=False) as bar:
        bar.update()
        bar.update(4)
        bar.set_postfix(imbalance=1e-3)
    assert isinstance(bar, Progress) and bar.n == 5 and not bar.enabled
    assert capsys.readouterr().err == ""


def test_default_follows_stderr_being_a_terminal(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress(3, desc="piped") as bar:
        bar.update(3)
    assert not bar.enabled and pipe.getvalue() == ""
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    with progress(3, desc="on a terminal") as bar:
        bar.update(3)
    assert bar.enabled and "on a terminal" in tty.getvalue()


def test_enabled_shows_desc_counts_and_postfix(monkeypatch):
    out = _Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    bar = progress(None, desc="sweeps", unit="sweep", enabled=True)
    bar.set_postfix(imbalance=1.25e-5, method="newton")
    bar.update(2)
    bar._bar.refresh()  # tqdm redraws at most every 0.2 s; force one
    text = out.getvalue()
    assert "sweeps" in text and "2sweep" in text.replace(" ", "")
    assert "imbalance=1.25e-05" in text and "method=newton" in text
    bar.close()
    bar.close()  # idempotent


def test_closed_stderr_counts_as_no_terminal(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert not progress(enabled=None).enabled


@pytest.mark.parametrize("unit", ["B", "it"])
def test_bytes_are_scaled(monkeypatch, unit):
    out = _Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    with progress(4 << 20, desc="reading", unit=unit, enabled=True) as bar:
        bar.update(2 << 20)
        bar._bar.refresh()
    text = out.getvalue()
    assert ("2.00M/4.00M" in text) == (unit == "B")
