"""The ``balgraph`` command: solve / check / demo, exit codes and one-line errors."""

import io
import json
import subprocess
import sys
import types

import networkx as nx
import numpy as np
import pytest

import balgraph
import balgraph.gallery
import balgraph.io as bio
from balgraph.cli import main


def _unit_imbalance(problem, p=2.0):
    """(in − c·out)/(in + c·out) per free untied unit, summed by hand from the edges."""
    cost = np.abs(problem.weight) ** p
    n = problem.n_nodes
    inc = np.bincount(problem.dst, weights=cost, minlength=n)
    out = problem.degree * np.bincount(problem.src, weights=cost, minlength=n)
    free = ~problem.fixed & (np.bincount(problem.var[~problem.fixed], minlength=problem.n_vars)[problem.var] == 1)
    return (inc - out)[free] / (inc + out)[free]


@pytest.fixture
def files(tmp_path):
    g = balgraph.gallery.random_network(3, kind="recurrent", bipu_fraction=0.3, tanh_fraction=0.2)
    bio.write_network(g, tmp_path / "net.graphml")
    bio.write_network(g, tmp_path / "net.gml")
    rng = np.random.default_rng(0)
    bio.write_layers(tmp_path / "mlp.npz", [rng.normal(size=(5, 3)) * 4, rng.normal(size=(4, 5)),
                                           rng.normal(size=(2, 4)) * 0.1],
                     [rng.normal(size=5), None, rng.normal(size=2)], ["relu", "tanh"])
    return tmp_path


@pytest.mark.parametrize("name", ["net.graphml", "net.gml", "mlp.npz"])
def test_solve_round_trip(files, capsys, name):
    src = files / name
    out = files / f"out{src.suffix}"
    assert main(["solve", str(src), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["converged"] and summary["cost_after"] < summary["cost_before"]
    before = balgraph.api.as_problem(bio.read_network(src))
    after = balgraph.api.as_problem(bio.read_network(out))
    assert np.max(np.abs(_unit_imbalance(after))) < 1e-9
    assert np.max(np.abs(_unit_imbalance(before))) > 1e-2
    assert np.sum(np.abs(after.weight) ** 2) == pytest.approx(summary["cost_after"], rel=1e-9)
    # the same network, rescaled: signs and zeros kept, fixed-to-fixed edges untouched
    lab = {k: str(x) for k, x in enumerate(before.nodes)}
    ref = {(lab[j], lab[i]): w for j, i, w in zip(before.src, before.dst, before.weight)}
    lab2 = {k: str(x) for k, x in enumerate(after.nodes)}
    got = {(lab2[j], lab2[i]): w for j, i, w in zip(after.src, after.dst, after.weight)}
    assert ref.keys() == got.keys()
    assert all(np.sign(ref[e]) == np.sign(got[e]) for e in ref)


def test_solve_default_output_and_text_summary(files, capsys):
    assert main(["solve", str(files / "net.gml")]) == 0
    text = capsys.readouterr().out
    assert (files / "net.balanced.gml").exists()
    assert "cost (L2)" in text and "converged" in text and "net.balanced.gml" in text


def _one_line_error(capsys, code, expected_code=1):
    err = capsys.readouterr().err
    assert code == expected_code
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err
    return err


def test_errors_are_one_line(files, capsys):
    err = _one_line_error(capsys, main(["solve", str(files / "nothere.graphml")]))
    assert "nothere.graphml" in err
    (files / "bad.graphml").write_text("garbage")
    _one_line_error(capsys, main(["check", str(files / "bad.graphml")]))
    _one_line_error(capsys, main(["solve", str(files / "net.gml"), "-p", "-1"]))
    _one_line_error(capsys, main(["solve", str(files / "net.gml"), "-o", str(files / "x.npz")]))
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(files / "net.gml"), "--method", "nope"])
    assert "nope" in _one_line_error(capsys, exc.value.code, 2)
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(files / "net.gml"), "--tol", "abc"])
    _one_line_error(capsys, exc.value.code, 2)


def test_no_finite_optimum_is_an_error_or_fixed(tmp_path, capsys):
    g = nx.DiGraph([("x", "h", {"weight": 2.0}), ("h", "y", {"weight": 1.0}), ("x", "dead", {"weight": 1.0})])
    g.nodes["y"]["role"] = "output"
    g.nodes["dead"]["role"] = "hidden"
    bio.write_network(g, tmp_path / "g.graphml")
    err = _one_line_error(capsys, main(["solve", str(tmp_path / "g.graphml")]))
    assert "'dead'" in err
    assert main(["solve", str(tmp_path / "g.graphml"), "--unreachable", "fix"]) == 0


def test_check_reports_the_worst_unit(files, capsys):
    path = files / "net.graphml"
    assert main(["check", str(path), "--json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    pb = balgraph.compile_network(bio.read_network(path))
    r = balgraph.imbalance(pb, balgraph.Lp(2.0), np.zeros(pb.n_vars))
    assert report["max_imbalance"] == pytest.approx(np.max(np.abs(r)))
    worst = report["top"][0]
    assert abs(worst["imbalance"]) == pytest.approx(np.max(np.abs(r)))
    k = pb.node_index[worst["unit"]]
    assert worst["in_cost"] == pytest.approx(sum(w ** 2 for w in pb.weight[pb.dst == k]))
    assert len(report["top"]) == 3 and report["depths"][0]["depth"] == 1
    assert main(["check", str(path)]) == 0
    text = capsys.readouterr().out
    assert worst["unit"] in text and "per depth" in text


def test_check_depths_of_an_mlp(files, capsys):
    assert main(["check", str(files / "mlp.npz"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["depth"] for d in report["depths"]] == [1]  # layer 2 is tanh: fixed
    assert report["depths"][0]["units"] == 5


def test_check_plot(files, capsys):
    pytest.importorskip("matplotlib")
    png = files / "hist.png"
    assert main(["check", str(files / "net.gml"), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_passes_the_seed(monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("balgraph.demo")
    fake.run_demo = lambda file, seed: calls.append(seed) or 0
    monkeypatch.setitem(sys.modules, "balgraph.demo", fake)
    assert main(["demo", "--seed", "7"]) == 0 and calls == [7]


def test_progress_callback():
    stream = io.StringIO()
    progress = Progress(stream, interval=0.0)
    calls = []
    balgraph.solve(balgraph.gallery.random_network(1), method="newton",
                   callback=lambda it, u: (calls.append(it), progress(it, u)))
    progress.close()
    assert calls, "the solver never called back"
    assert stream.getvalue() == "".join(f"\rbalgraph: iteration {i}" for i in calls) + "\n"


def test_python_m_help():
    for args in ([], ["solve"], ["check"], ["demo"]):
        done = subprocess.run([sys.executable, "-m", "balgraph", *args, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout
