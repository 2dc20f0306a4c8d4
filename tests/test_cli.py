"""The ``balgraph`` command: solve / check / demo, exit codes and one-line errors."""

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
    with pytest.raises(SystemExit) as exc:
        main(["solve", str(files / "net.gml"), "-p", "-1"])
    assert "-p" in _one_line_error(capsys, exc.value.code, 2)
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
    # CLI advice, not Python advice
    assert "--unreachable fix" in err and "--unreachable prune" in err
    assert "solve(" not in err and "unreachable=" not in err
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
    assert len(report["top"]) == 3 and report["depths"][0]["depth"] in (-1, 1)
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


def test_python_m_help():
    for args in ([], ["solve"], ["check"], ["demo"]):
        done = subprocess.run([sys.executable, "-m", "balgraph", *args, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage:" in done.stdout


# ---------------------------------------------------------------- shell conventions (issue 15)
def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"balgraph {balgraph.__version__}"


def test_check_fail_above_gates_ci(files, capsys):
    path = str(files / "mlp.npz")
    assert main(["check", path, "--json"]) == 0
    worst = _strict_json(capsys.readouterr().out)["max_imbalance"]
    assert worst > 0.1
    assert main(["check", path, "--fail-above", f"{worst * 0.99}"]) == 1
    assert "--fail-above" in capsys.readouterr().err
    assert main(["check", path, "--fail-above", f"{worst * 1.01}", "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["passed"] is True
    out = files / "bal.npz"
    assert main(["solve", path, "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["check", str(out), "--fail-above", "1e-9"]) == 0


def test_weight_attribute_option(tmp_path, capsys):
    g = nx.DiGraph()
    g.add_edge("x", "h", w=4.0, label="a & <b>")
    g.add_edge("h", "y", w=1.0, label="c")
    bio.write_network(g, tmp_path / "g.graphml")
    bio.write_network(g, tmp_path / "g.gml")
    for name in ("g.graphml", "g.gml"):
        err = _one_line_error(capsys, main(["solve", str(tmp_path / name)]))
        assert "--weight-attr" in err and "weights=" not in err
        out = tmp_path / f"out_{name}"
        assert main(["solve", str(tmp_path / name), "--weight-attr", "w", "-o", str(out)]) == 0
        back = bio.read_network(out)
        # 4 -> 2 and 1 -> 2: the balanced state of a chain x -a-> h -b-> y is a = b = sqrt(ab)
        assert back.edges["x", "h"]["w"] == pytest.approx(2.0, rel=1e-12)
        assert back.edges["h", "y"]["w"] == pytest.approx(2.0, rel=1e-12)
        assert back.edges["x", "h"]["label"] == "a & <b>"  # other attributes kept
        assert "weight" not in back.edges["x", "h"]
        assert main(["check", str(out), "--weight-attr", "w", "--fail-above", "1e-12"]) == 0
        capsys.readouterr()


def _max_gap_by_hand(problem):
    """|max_in - max_out| / (max_in + max_out) per free untied unit, from the edges."""
    out = []
    for k in np.flatnonzero(~problem.fixed):
        w_in = np.abs(problem.weight[(problem.dst == k) & (problem.src != k)])
        w_out = np.abs(problem.weight[(problem.src == k) & (problem.dst != k)])
        a, b = w_in.max(initial=0), w_out.max(initial=0)
        out.append(abs(a - b) / (a + b))
    return np.array(out)


def test_check_p_inf_is_the_max_balance_gap(files, capsys):
    path = files / "mlp.npz"
    assert main(["check", str(path), "-p", "inf", "--json"]) == 0
    report = _strict_json(capsys.readouterr().out)
    assert report["p"] == "inf"
    pb = bio.read_network(path)
    assert report["max_imbalance"] == pytest.approx(np.max(_max_gap_by_hand(pb)), rel=1e-12)
    top = report["top"][0]
    k = pb.node_index[next(x for x in pb.nodes if str(x) == top["unit"])]
    assert top["in_cost"] == pytest.approx(np.abs(pb.weight[pb.dst == k]).max())
    out = files / "maxbal.npz"
    assert main(["solve", str(path), "-p", "inf", "-o", str(out), "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["p"] == "inf"
    assert np.max(_max_gap_by_hand(bio.read_network(out))) < 1e-9
    assert main(["check", str(out), "-p", "inf", "--fail-above", "1e-9"]) == 0


def test_plot_without_matplotlib_is_one_line(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    err = _one_line_error(capsys, main(["check", str(files / "net.gml"), "--plot", str(files / "h.png")]))
    assert 'pip install "balgraph[plot]"' in err
    assert not (files / "h.png").exists()


def test_top_zero_prints_no_table_header(files, capsys):
    assert main(["check", str(files / "net.gml"), "--top", "0"]) == 0
    text = capsys.readouterr().out
    assert "worst units" not in text and "per depth" in text


def test_depths_of_an_mlp_with_biases(tmp_path, capsys):
    rng = np.random.default_rng(2)
    sizes = [3, 6, 5, 4, 2]
    mats = [rng.normal(size=(m, n)) for n, m in zip(sizes, sizes[1:])]
    bio.write_layers(tmp_path / "deep.npz", mats, [rng.normal(size=m) for m in sizes[1:]])
    assert main(["check", str(tmp_path / "deep.npz"), "--json"]) == 0
    report = _strict_json(capsys.readouterr().out)
    # hidden layer k has depth k (bias units are sources, not a layer)
    assert [(d["depth"], d["units"]) for d in report["depths"]] == [(1, 6), (2, 5), (3, 4)]
    # in-cost of layer 2 by hand: its weights and biases, squared
    pb = bio.read_network(tmp_path / "deep.npz")
    layer2 = [k for k, x in enumerate(pb.nodes) if x[0] == 2]
    by_hand = sum(float(np.sum(pb.weight[pb.dst == k] ** 2)) for k in layer2)
    assert report["depths"][1]["in_cost"] == pytest.approx(by_hand, rel=1e-12)


def test_depth_is_the_longest_path_on_a_dag():
    # x -> a -> b -> y and a skip x -> b: b is at depth 2 (its layer), not 1
    g = nx.DiGraph([("x", "a", {"weight": 1.0}), ("a", "b", {"weight": 1.0}), ("x", "b", {"weight": 1.0}),
                    ("b", "y", {"weight": 1.0}), ("bias", "b", {"weight": 1.0})])
    g.nodes["bias"]["role"] = "bias"
    pb = balgraph.compile_network(g)
    from balgraph._cli_report import depths

    depth, rule = depths(pb)
    got = {str(x): int(d) for x, d in zip(pb.nodes, depth)}
    assert got == {"x": 0, "a": 1, "b": 2, "y": 3, "bias": -1} and "longest" in rule
    g.add_edge("b", "a", weight=1.0)  # a cycle: shortest paths
    depth, rule = depths(balgraph.compile_network(g))
    assert "shortest" in rule


def test_unconverged_result_is_not_written(files, capsys):
    src, out = files / "net.graphml", files / "partial.graphml"
    code = main(["solve", str(src), "--method", "parallel", "--max-iter", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert err.count("warning:") == 1 and "--allow-unconverged" in err and "--max-iter" in err
    code = main(["solve", str(src), "--method", "parallel", "--max-iter", "2", "-o", str(out),
                 "--allow-unconverged", "--json"])
    captured = capsys.readouterr()
    summary = _strict_json(captured.out)
    assert code == 1 and out.exists() and summary["written"] and not summary["converged"]
    assert captured.err.count("warning:") == 1


def test_json_never_holds_infinity_or_nan(files, capsys):
    rng = np.random.default_rng(3)
    path = files / "big.npz"
    bio.write_layers(path, [rng.normal(size=(4, 3)) * 50, rng.normal(size=(2, 4)) * 1e-3])
    assert main(["check", str(path), "-p", "600", "--json"]) == 0
    report = _strict_json(capsys.readouterr().out)
    assert report["top"][0]["in_cost"] is None  # 50^600 overflows float64: null, not Infinity
    assert report["top"][0]["log10_in_cost"] > 308
    assert report["max_imbalance"] == pytest.approx(1.0)
    assert main(["solve", str(files / "mlp.npz"), "-o", str(files / "o.npz"), "--json"]) == 0
    _strict_json(capsys.readouterr().out)
    from balgraph.cli import json_safe

    assert json_safe({"a": [float("inf"), np.float64("nan"), np.int64(3)]}) == {"a": [None, None, 3]}


def test_option_errors_name_the_flag(files, capsys):
    for argv, flag in [(["demo", "--seed", "-1"], "--seed"), (["check", "x.gml", "--top", "-2"], "--top"),
                       (["solve", "x.gml", "--tol", "0"], "--tol"), (["check", "x.gml", "--fail-above", "x"],
                                                                      "--fail-above")]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert flag in _one_line_error(capsys, exc.value.code, 2)


def test_npz_with_one_layer_does_not_crash(tmp_path, capsys):
    rng = np.random.default_rng(4)
    bio.write_layers(tmp_path / "one.npz", [rng.normal(size=(3, 2))], [rng.normal(size=3)])
    code = main(["solve", str(tmp_path / "one.npz")])
    if code == 1:  # the core refuses: one clear line
        assert "nothing to balance" in _one_line_error(capsys, code)
    else:  # the core returns the trivial result: the same weights
        assert code == 0
        np.testing.assert_array_equal(bio.read_layers(tmp_path / "one.balanced.npz")[0][0],
                                      bio.read_layers(tmp_path / "one.npz")[0][0])
    capsys.readouterr()
    assert main(["check", str(tmp_path / "one.npz")]) == 0
    assert "0 free units" in capsys.readouterr().out


@pytest.mark.parametrize("array, value, words", [
    ("b0", np.array(["a", "b", "c"]), ["'b0'", "string"]),
    ("W1", np.ones((1, 3)) * (1 + 2j), ["'W1'", "complex"]),
    ("b1", np.ones((1, 1)), ["'b1'", "1-D"]),
])
def test_npz_bad_arrays_name_file_and_array(tmp_path, capsys, array, value, words):
    arrays = {"W0": np.ones((3, 2)), "b0": np.ones(3), "W1": np.ones((1, 3))}
    arrays[array] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    err = _one_line_error(capsys, main(["solve", str(path)]))
    assert "bad.npz" in err and all(w in err for w in words)


def test_cli_message_translates_python_advice():
    from balgraph.cli import cli_message

    msg = ("2 free unit(s) have no finite balanced scale. Remove them, or call solve(..., unreachable='fix')"
           " to keep them at scale 1 or unreachable='prune' to zero their weights.")
    assert cli_message(msg).endswith("or pass --unreachable fix to keep them at scale 1 or --unreachable prune"
                                     " to zero their weights.")
    assert "--weight-attr NAME" in cli_message("edge ('a', 'b') has no 'w' attribute: set it, or pass weights="
                                               " the attribute that holds it (or a mapping or a callable)")
    assert cli_message("use method='newton' instead") == "use --method newton instead"
    assert cli_message("did not reach tol=1e-10") == "did not reach --tol 1e-10"


class _Bar:
    def __init__(self):
        self.n, self.postfix = 0, {}

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **values):
        self.postfix.update(values)


def test_progress_shown_on_request(files, capsys):
    assert main(["solve", str(files / "net.graphml"), "-o", str(files / "p.graphml"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "reading net.graphml" in err and "writing p.graphml" in err
    assert main(["solve", str(files / "net.graphml"), "-o", str(files / "p.graphml")]) == 0
    assert capsys.readouterr().err == ""  # not a terminal: quiet
