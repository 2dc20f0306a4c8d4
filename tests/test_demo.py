"""run_demo(): the table it prints and the verdict it returns."""

from __future__ import annotations

import io
import re

import pytest

from balgraph import demo

ROW = re.compile(
    r"^(?P<net>W1|small)\s+(?P<method>\w+)\s+(?P<before>\S+)\s+(?P<after>\S+)\s+(?P<imb>\S+)\s+(?P<acc>\S+)"
    r"\s+(?P<conv>yes|NO)\s+(?P<its>\d+) (?P<unit>Newton steps|sweeps|interior-point its)\s+"
    r"(?P<dw>\(reference\)|\S+)\s+(?P<time>\d+\.\d+) s$", re.MULTILINE)


def _available(methods):
    return [m for m in methods if demo._availability(m) is None]


def _rows(text):
    return {(m["net"], m["method"]): m for m in ROW.finditer(text)}


@pytest.fixture(scope="module")
def w1_text():
    if not _available(demo.W1_METHODS):
        pytest.skip("no global or layer-parallel method is installed yet")
    out = io.StringIO()
    assert demo.run_demo(out, seed=0) == 0
    return out.getvalue()


def test_run_demo_balances_w1_with_every_available_method(w1_text):
    text = w1_text
    rows = _rows(text)
    ref = _available(demo.W1_METHODS)[0]
    assert rows[("W1", ref)]["dw"] == "(reference)" and rows[("small", ref)]["dw"] == "(reference)"
    for m in _available(demo.W1_METHODS):
        assert ("W1", m) in rows
    for m in _available(demo.SMALL_METHODS):
        assert ("small", m) in rows
    assert "stochastic" in demo.SMALL_METHODS  # "every algorithm"
    for m in set(demo.W1_METHODS + demo.SMALL_METHODS) - set(_available(demo.W1_METHODS + demo.SMALL_METHODS)):
        assert f"{m}: not available" in text
    assert "365,034 weights, 650 free units" in text
    assert re.search(r"^network function unchanged: max \|Δoutput\| / max \|output\| = \S+", text, re.MULTILINE)
    # every method ran; the converged ones are balanced to what their row accepts, cheaper
    # (balancing only lowers the cost, Theorem 5.6) and agree with the reference
    for row in rows.values():
        before, after, imb, acc = (float(row[k]) for k in ("before", "after", "imb", "acc"))
        assert after < before
        if row["conv"] == "yes":
            assert imb <= acc and (row["dw"] == "(reference)" or float(row["dw"]) <= 1e-6)
        else:
            assert re.search(rf"did not converge .*{row['method']} on {row['net']}", text)
    if any(r["conv"] == "yes" and r["dw"] != "(reference)" for r in rows.values()):
        assert "methods agree:" in text and "DISAGREE" not in text


def test_rows_state_their_unit_and_tolerance_honestly(w1_text):
    rows = _rows(w1_text)
    for (net, method), row in rows.items():
        unit = {"newton": "Newton steps", "cvxpy": "interior-point its", "cvxpy_dgp": "interior-point its"}
        assert row["unit"] == unit.get(method, "sweeps")
        assert float(row["acc"]) == (1e-6 if method.startswith("cvxpy") else 1e-10)
    if _available(["cvxpy"]):
        assert "cvxpy (cvxpy, cvxpy_dgp): interior point, accepted <= 1e-06" in w1_text


def test_ends_with_the_gain_and_what_to_try_next(w1_text):
    m = re.search(r"^gained: W1's L2 weight cost (\S+) -> (\S+) \(-(\S+) %\)", w1_text, re.MULTILINE)
    assert m
    before, after, percent = map(float, m.groups())
    newton = _rows(w1_text)[("W1", _available(demo.W1_METHODS)[0])]
    assert before == pytest.approx(float(newton["before"]), rel=1e-3)
    assert after == pytest.approx(float(newton["after"]), rel=1e-3)
    assert percent == pytest.approx(100 * (1 - after / before), abs=0.1)
    tail = w1_text[w1_text.index("\nnext:\n"):].strip().splitlines()[1:]
    assert 2 <= len(tail) <= 3 and all(line.strip().startswith("balgraph ") for line in tail)


@pytest.fixture
def tiny(monkeypatch):
    if not _available(demo.W1_METHODS):
        pytest.skip("no global or layer-parallel method is installed yet")
    monkeypatch.setattr(demo, "W1_SIZES", (6, 5, 4, 5, 6))
    monkeypatch.setattr(demo, "SMALL_SIZES", (5, 4, 3, 4, 5))
    monkeypatch.setattr(demo, "SMALL_METHODS", tuple(m for m in demo.SMALL_METHODS if not m.startswith("cvxpy")))


def _strip_times(text):
    return [re.sub(r"\d+\.\d+ s$", "", m.group(0)) for m in ROW.finditer(text)]


def test_same_seed_same_rows(tiny):
    runs = []
    for seed in (3, 3, 4):
        out = io.StringIO()
        assert demo.run_demo(out, seed=seed) == 0
        runs.append(_strip_times(out.getvalue()))
    assert runs[0] == runs[1] and len(runs[0]) >= 5
    assert runs[0] != runs[2]


def test_w1_rows_repeat(w1_text):
    out = io.StringIO()
    assert demo.run_demo(out, seed=0) == 0
    assert _strip_times(out.getvalue()) == _strip_times(w1_text)


def test_the_seed_reaches_solve(tiny, monkeypatch):
    seen = []
    real_solve = demo.solve
    monkeypatch.setattr(demo, "solve", lambda *a, **kw: seen.append(kw.get("seed")) or real_solve(*a, **kw))
    assert demo.run_demo(io.StringIO(), seed=11) == 0
    assert seen and set(seen) == {11}


def test_run_demo_reports_a_changed_function(monkeypatch):
    if not _available(demo.W1_METHODS):
        pytest.skip("no global or layer-parallel method is installed yet")
    real_solve = demo.solve

    def broken_solve(*args, **kwargs):
        res = real_solve(*args, **kwargs)
        res.weight_array = res.weight_array * 1.001  # not a rescaling: the function changes
        return res

    monkeypatch.setattr(demo, "solve", broken_solve)
    monkeypatch.setattr(demo, "W1_SIZES", (6, 4, 3, 4, 6))
    monkeypatch.setattr(demo, "SMALL_METHODS", ())
    out = io.StringIO()
    assert demo.run_demo(out, seed=1) == 1
    text = out.getvalue()
    assert "network function CHANGED" in text and "unchanged" not in text
