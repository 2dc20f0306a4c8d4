"""run_demo(): the table it prints and the verdict it returns."""

from __future__ import annotations

import io
import re

import pytest

from balgraph import demo


def _available(methods):
    return [m for m in methods if demo._availability(m) is None]


def test_run_demo_balances_w1_with_every_available_method():
    if not _available(demo.W1_METHODS):
        pytest.skip("no global or layer-parallel method is installed yet")
    out = io.StringIO()
    assert demo.run_demo(out, seed=0) == 0
    text = out.getvalue()
    rows = {(m.group(1), m.group(2)): m.group(0) for m in re.finditer(r"^(W1|small)\s+(\w+)\s.*$", text, re.MULTILINE)}
    ref = _available(demo.W1_METHODS)[0]
    assert "(reference)" in rows[("W1", ref)] and "(reference)" in rows[("small", ref)]
    for m in _available(demo.W1_METHODS):
        assert ("W1", m) in rows
    for m in _available(demo.SMALL_METHODS):
        assert ("small", m) in rows
    for m in set(demo.W1_METHODS + demo.SMALL_METHODS) - set(_available(demo.W1_METHODS + demo.SMALL_METHODS)):
        assert f"{m}: not available" in text
    assert "365,034 weights, 650 free units" in text
    assert re.search(r"^network function unchanged: max \|Δoutput\| / max \|output\| = \S+", text, re.MULTILINE)
    # every method ran; the converged ones are balanced, cheaper (balancing only lowers the
    # cost, Theorem 5.6) and agree with the reference
    for row in rows.values():
        fields = row.split()
        assert len(fields) == 9 and fields[6] in ("yes", "NO"), row
        before, after, imb = map(float, fields[2:5])
        assert after < before
        if fields[6] == "yes":
            assert imb <= 1e-8 and (fields[8] == "(reference)" or float(fields[8]) <= 1e-6)
        else:
            assert re.search(rf"did not converge .*{fields[1]} on {fields[0]}", text)
    if any(r.split()[6] == "yes" and r.split()[8] != "(reference)" for r in rows.values()):
        assert "methods agree:" in text and "DISAGREE" not in text


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
