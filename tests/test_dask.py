"""Dask arrays as layer blocks: balanced where the chunks live, to the NumPy answer (issue 16).

The threaded scheduler runs most tests; the ``cluster`` tests start a ``LocalCluster`` of two
worker processes (stopped at the end of the module) and build the weights on the workers, so
that the driver never holds them. Round trips are counted by wrapping ``dask.compute``, which
``balgraph.lazy.compute`` calls: every value that comes back is a per-unit vector or a scalar.
"""

import json
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import balgraph  # noqa: E402
import balgraph.io as bio  # noqa: E402
from balgraph.cli import main  # noqa: E402
from balgraph.costs import build_model  # noqa: E402
from balgraph.errors import NetworkError, OptionError  # noqa: E402
from balgraph.evaluate import evaluate  # noqa: E402
from balgraph.model import ensure_finite_optimum  # noqa: E402


def _chain(seed, sizes, spread=2.0, bias=True):
    """Gaussian layers with per-layer scales e^U(-spread, spread) (far from balanced), biases."""
    rng = np.random.default_rng(seed)
    mats = [rng.normal(size=(m, n)) * np.exp(rng.uniform(-spread, spread)) for n, m in zip(sizes, sizes[1:])]
    biases = [rng.normal(size=m) if bias and k < len(mats) - 1 else None for k, m in enumerate(sizes[1:])]
    return mats, biases


def _lazy(arrays, chunks):
    return [None if a is None else da.from_array(a, chunks=chunks if a.ndim == 2 else -1) for a in arrays]


class Trips:
    """Counts ``dask.compute`` calls and the largest array that came back to the caller."""

    def __init__(self, monkeypatch):
        self.calls, self.largest = 0, 0
        real = dask.compute

        def counted(*args, **kwargs):
            out = real(*args, **kwargs)
            self.calls += 1
            self.largest = max([self.largest, *(np.size(a) for a in _leaves(out))])
            return out

        monkeypatch.setattr(dask, "compute", counted)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


@pytest.fixture
def no_gathering(monkeypatch):
    """``np.asarray`` on a Dask array (a whole block to the driver) fails the test."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a Dask array of shape {self.shape} was gathered")

    monkeypatch.setattr(da.Array, "__array__", refuse)


# ------------------------------------------------------------------ threaded scheduler
@pytest.mark.parametrize("p, storage, chunks", [(2.0, None, (7, 9)), (1.0, "float64", (16, 5)), (3.5, None, (40, 40))])
def test_solve_matches_numpy(p, storage, chunks, no_gathering):
    mats, biases = _chain(3, [12, 20, 17, 25, 4])
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases), p=p)
    res = balgraph.solve(balgraph.Problem.from_layers(_lazy(mats, chunks), _lazy(biases, chunks)), p=p,
                         storage=storage)
    assert res.converged and res.info["model"] == "layered"
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)
    assert res.log_cost_after == pytest.approx(ref.log_cost_after, abs=1e-10)
    assert res.max_imbalance <= 1e-10


@pytest.mark.parametrize("method", ["parallel", "alternating"])
def test_sweep_schedules_match_numpy(method, no_gathering):
    mats, biases = _chain(5, [6, 9, 9, 3], spread=1.0)
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases), method=method, tol=1e-9)
    res = balgraph.solve(balgraph.Problem.from_layers(_lazy(mats, 4), _lazy(biases, 4)), method=method, tol=1e-9)
    assert res.converged and res.iterations == ref.iterations
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-10)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       rows=st.integers(1, 6), cols=st.integers(1, 6), p=st.sampled_from([1.0, 2.0, 3.0]))
def test_model_point_and_hessian_match_numpy(seed, widths, rows, cols, p):
    """The Dask model's gradient parts, cost and Hessian products equal the NumPy model's, for any chunking."""
    mats, biases = _chain(seed, [3, *widths, 2])
    eager = build_model(balgraph.Problem.from_layers(mats, biases), balgraph.Lp(p))
    lazy = build_model(balgraph.Problem.from_layers(_lazy(mats, (rows, cols)), _lazy(biases, rows)), balgraph.Lp(p))
    z = eager.start(np.random.default_rng(seed).normal(size=eager.n))
    a, b = eager.point(z), lazy.point(lazy.start(eager.potentials(z)))
    np.testing.assert_allclose(b.log_p, a.log_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.log_n, a.log_n, rtol=1e-12, atol=1e-12)
    assert b.log_cost == pytest.approx(a.log_cost, rel=1e-12, abs=1e-12)
    y = np.random.default_rng(seed + 1).normal(size=eager.n)
    np.testing.assert_allclose(lazy.hessian(b).matvec(y), eager.hessian(a).matvec(y), rtol=1e-10, atol=1e-12)


def test_one_round_trip_per_step_and_only_vectors_come_back(monkeypatch, no_gathering):
    mats, biases = _chain(8, [10, 30, 30, 30, 5])
    trips = Trips(monkeypatch)
    pb = balgraph.Problem.from_layers(_lazy(mats, (8, 11)), _lazy(biases, 8))
    assert trips.take() == 1  # every layer and bias checked for NaN and inf at once
    ensure_finite_optimum(pb)
    assert trips.take() == 1  # both reachability visits
    model = build_model(pb, balgraph.Lp(2))
    assert trips.take() == 2  # row sums of the fixed-side layers; the ranges of the inner ones
    pt = model.point(model.start(np.zeros(pb.n_vars)))
    assert trips.take() == 1
    model.hessian(pt).matvec(np.ones(model.n))
    assert trips.take() == 1
    evaluate(pb, balgraph.Lp(2), np.zeros(pb.n_vars))
    assert trips.take() == 1
    res = balgraph.solve(pb)
    assert res.converged
    # the largest thing that ever came back: a stack of per-unit vectors, nothing like a layer
    assert 0 < trips.largest <= pb.n_nodes < 30 * 30


def test_layer_weights_are_lazy_input_chunks_times_scales(monkeypatch):
    mats, biases = _chain(9, [7, 13, 11, 2])
    lazy = _lazy(mats, (5, 4))
    res = balgraph.solve(balgraph.Problem.from_layers(lazy, _lazy(biases, 5)))
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases))
    trips = Trips(monkeypatch)
    weights, out_biases = res.layer_weights(), res.layer_biases()
    assert trips.take() == 0  # nothing computed: the user writes them with to_zarr, store, ...
    for W, lw, rw in zip(lazy, weights, ref.layer_weights()):
        assert isinstance(lw, da.Array) and lw.chunks == W.chunks
        np.testing.assert_allclose(lw.compute(), rw, rtol=1e-9, atol=0)
    for lb, rb in zip(out_biases, ref.layer_biases()):
        assert (lb is None) == (rb is None)
        if lb is not None:
            np.testing.assert_allclose(np.asarray(lb.compute()), rb, rtol=1e-9)


def test_float32_chunks_and_npy_memory_maps(tmp_path, no_gathering):
    mats, _ = _chain(11, [9, 14, 14, 3])
    paths = []
    for k, W in enumerate(mats):
        paths.append(tmp_path / f"W{k}.npy")
        np.save(paths[-1], W.astype(np.float32))
    layers = [da.from_array(np.load(p, mmap_mode="r"), chunks=(5, 7)) for p in paths]
    res = balgraph.solve(balgraph.Problem.from_layers(layers))
    ref = balgraph.solve(balgraph.Problem.from_layers([W.astype(np.float32).astype(np.float64) for W in mats]))
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)
    assert res.layer_weights()[0].dtype == np.float32


def test_bad_weights_and_options_are_named_without_gathering():
    mats, _ = _chain(1, [4, 6, 3])
    bad = mats[1].copy()
    bad[2, 4] = np.nan
    with pytest.raises(NetworkError, match=r"layer 2.*\[2, 4\]"):
        balgraph.Problem.from_layers(_lazy([mats[0], bad], 3))
    pb = balgraph.Problem.from_layers(_lazy(mats, 3))
    with pytest.raises(OptionError, match="Dask"):
        balgraph.solve(pb, device="cuda")
    wide = [mats[0], np.array([[1.0, 1e-200, 1.0, 1.0, 1.0, 1.0]] * 6), mats[1]]
    with pytest.raises(OptionError, match="Dask arrays.*gathers"):
        balgraph.solve(balgraph.Problem.from_layers(_lazy(wide, 3)))
    # asked for explicitly, a per-edge model gathers the weights and gets the NumPy answer
    res = balgraph.solve(balgraph.Problem.from_layers(_lazy(wide, 3)), model="log-domain")
    ref = balgraph.solve(balgraph.Problem.from_layers(wide))
    np.testing.assert_allclose(res.x, ref.x, atol=1e-8)


def test_core_import_does_not_import_dask():
    import subprocess
    import sys

    code = ("import sys, numpy as np, balgraph; balgraph.solve(balgraph.Problem.from_layers("
            "[np.ones((3, 2)), np.ones((1, 3))])); print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ sharded files
def _sharded(tmp_path, tensors, groups, stem="model"):
    """Hugging Face's layout: shards of the named tensors and an index."""
    from safetensors.numpy import save_file

    n = len(groups)
    weight_map = {}
    for k, names in enumerate(groups, start=1):
        file = f"{stem}-{k:05d}-of-{n:05d}.safetensors"
        save_file({name: tensors[name] for name in names}, tmp_path / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
    index = tmp_path / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def _tensors(seed, sizes, dtype=np.float32):
    mats, biases = _chain(seed, sizes)
    out = {}
    for k, (W, b) in enumerate(zip(mats, biases)):
        out[f"net.{2 * k}.weight"] = W.astype(dtype)
        if b is not None:
            out[f"net.{2 * k}.bias"] = b.astype(dtype)
    return out


def _read_dir(folder):
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out |= load_file(folder / f)
    return out


def test_sharded_safetensors_balanced_and_written_shard_by_shard(tmp_path, no_gathering):
    pytest.importorskip("safetensors")
    tensors = _tensors(2, [16, 24, 24, 6])
    src = tmp_path / "in"
    src.mkdir()
    index = _sharded(src, tensors, [["net.0.weight", "net.0.bias"], ["net.2.weight", "net.2.bias", "net.4.weight"]])
    nf = bio.open_network(index)
    assert nf.format == "safetensors-index" and all(isinstance(b.weight, da.Array) for b in nf.problem.blocks)
    res = balgraph.solve(nf.problem)
    out = tmp_path / "out"
    out.mkdir()
    nf.write(res, out / "bal.safetensors.index.json")
    files = sorted(os.listdir(out))
    assert files == ["bal-00001-of-00002.safetensors", "bal-00002-of-00002.safetensors", "bal.safetensors.index.json"]
    written = json.loads((out / "bal.safetensors.index.json").read_text())
    assert written["weight_map"]["net.2.bias"] == "bal-00002-of-00002.safetensors"
    # the same bytes as the path that loads the file: balanced in float64, cast back to float32
    eager = tmp_path / "eager.safetensors"
    single = tmp_path / "one.safetensors"
    from safetensors.numpy import save_file

    save_file(tensors, single)
    nf_eager = bio.open_network(single)
    nf_eager.write(balgraph.solve(nf_eager.problem), eager)
    got, want = _read_dir(out), _read_dir_one(eager)
    assert set(got) == set(tensors)
    for name in tensors:  # the two solves agree to ~1e-15: at most a float32 rounding apart
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=2.5e-7, atol=0)


def _read_dir_one(path):
    from safetensors.numpy import load_file

    return load_file(path)


def test_lazy_results_written_as_files_without_a_source(tmp_path, no_gathering):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    mats, biases = _chain(12, [5, 8, 3])
    res = balgraph.solve(balgraph.Problem.from_layers(_lazy(mats, 4), _lazy(biases, 4)))
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases))
    bio.write_network(res, tmp_path / "m.safetensors.index.json")
    bio.write_network(res, tmp_path / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["m-00001-of-00001.safetensors", "m.safetensors", "m.safetensors.index.json"]
    for file in ("m-00001-of-00001.safetensors", "m.safetensors"):
        got = load_file(tmp_path / file)
        assert sorted(got) == ["0.bias", "0.weight", "1.weight"] and got["1.weight"].dtype == np.float64
        np.testing.assert_allclose(got["1.weight"], ref.layer_weights()[1], rtol=1e-12)
        np.testing.assert_allclose(got["0.bias"], ref.layer_biases()[0], rtol=1e-12)


def test_bfloat16_and_float16_files_and_their_limits(tmp_path, no_gathering):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    tensors = _tensors(4, [5, 8, 3])
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()}, tmp_path / "bf.safetensors")
    lazy_chain = bio.read_layer_chain(tmp_path / "bf.safetensors", chunks=(3, 4))
    eager_chain = bio.read_layer_chain(tmp_path / "bf.safetensors")
    np.testing.assert_array_equal(lazy_chain.matrices[1].compute(), eager_chain.matrices[1])
    r1, r2 = balgraph.solve(lazy_chain.problem()), balgraph.solve(eager_chain.problem())
    lazy_chain.write(tmp_path / "lazy.safetensors", r1.layer_weights(), r1.layer_biases())
    eager_chain.write(tmp_path / "eager.safetensors", r2.layer_weights(), r2.layer_biases())
    a, b = load_file(tmp_path / "lazy.safetensors"), load_file(tmp_path / "eager.safetensors")
    assert {k: v.dtype for k, v in a.items()} == dict.fromkeys(tensors, torch.bfloat16)
    exact = dict(zip(lazy_chain.weight_names, r1.layer_weights())) | {
        n: b for n, b in zip(lazy_chain.bias_names, r1.layer_biases()) if n is not None}
    for k in tensors:  # the same rounding to bfloat16 as torch's; the eager path within one bfloat16 step
        assert torch.equal(a[k], torch.from_numpy(np.asarray(exact[k].compute())).to(torch.bfloat16))
        np.testing.assert_allclose(a[k].float().numpy(), b[k].float().numpy(), rtol=2.0**-7)
    # a balanced weight that float16 cannot hold: an error naming the tensor, and no file left
    # (one hidden unit: 100 inputs of 6e4 and one output of 6e4; balanced, the output is 6e4·√10)
    big = {"0.weight": np.full((1, 100), 6e4, np.float16), "1.weight": np.array([[6e4]], np.float16)}
    from safetensors.numpy import save_file as np_save

    np_save(big, tmp_path / "h.safetensors")
    chain = bio.read_layer_chain(tmp_path / "h.safetensors", chunks="auto")
    res = balgraph.solve(chain.problem())
    with pytest.raises(NetworkError, match=r"balanced 1.weight does not fit in float16: 1 value"):
        chain.write(tmp_path / "h.out.safetensors", res.layer_weights(), res.layer_biases())
    assert not (tmp_path / "h.out.safetensors").exists()
    with pytest.raises(NetworkError, match="overwrite"):
        chain.write(tmp_path / "h.safetensors", res.layer_weights(), res.layer_biases())


def test_cli_solves_a_sharded_checkpoint(tmp_path, capsys):
    pytest.importorskip("safetensors")
    tensors = _tensors(6, [8, 12, 4])
    index = _sharded(tmp_path, tensors, [["net.0.weight"], ["net.0.bias", "net.2.weight"]])
    assert main(["solve", str(index), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["converged"] and report["output"].endswith("model.balanced.safetensors.index.json")
    mats, biases = [tensors["net.0.weight"], tensors["net.2.weight"]], [tensors["net.0.bias"], None]
    ref = balgraph.solve(balgraph.Problem.from_layers([m.astype(float) for m in mats],
                                                      [None if b is None else b.astype(float) for b in biases]))
    bal = _read_dir_one(tmp_path / "model.balanced-00002-of-00002.safetensors")
    assert set(bal) == {"net.0.bias", "net.2.weight"}
    np.testing.assert_allclose(bal["net.2.weight"], ref.layer_weights()[1].astype(np.float32), rtol=2.5e-7)
    single = tmp_path / "one.safetensors"
    from safetensors.numpy import save_file

    save_file(tensors, single)
    assert main(["solve", str(single), "--chunks", "auto", "-o", str(tmp_path / "one.out.safetensors")]) == 0
    np.testing.assert_allclose(_read_dir_one(tmp_path / "one.out.safetensors")["net.2.weight"], bal["net.2.weight"],
                               rtol=2.5e-7)


# ------------------------------------------------------------------ a cluster of worker processes
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # LocalCluster runs its scheduler inside this (the driver's) process: keep the scheduler's
    # history of past computations short, so that the memory measured is the driver's own.
    with dask.config.set({"distributed.diagnostics.computations.max-history": 1,
                          "distributed.admin.low-level-log-length": 10}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, worker_dashboard_address=None)
        with distributed.Client(cluster) as c:
            yield c
        cluster.close()


def _on_workers(seed, sizes, rows):
    """A chain generated on the workers and kept there (the driver never holds it)."""
    rs = da.random.default_rng(seed)
    return [(rs.standard_normal(size=(m, n), chunks=(rows, -1)) * float(np.exp(k % 3 - 1))).persist()
            for k, (n, m) in enumerate(zip(sizes, sizes[1:]))]


@pytest.mark.parametrize("storage, warmup, sent", [(None, 10, False), ("float64", 0, False), (None, 2, True)])
def test_cluster_matches_numpy(client, storage, warmup, sent):
    mats = _on_workers(1, [60, 90, 90, 70, 5], 40)
    if sent:  # NumPy arrays wrapped by da.from_array on the driver, shipped with the graphs
        mats = [da.from_array(np.asarray(W), chunks=(25, 30)) for W in mats]
    res = balgraph.solve(balgraph.Problem.from_layers(mats), storage=storage, warmup=warmup)
    host = [np.asarray(W) for W in mats]  # gathered for the reference only
    ref = balgraph.solve(balgraph.Problem.from_layers(host))
    assert res.converged
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)
    lw = res.layer_weights()[2]
    assert isinstance(lw, da.Array)
    np.testing.assert_allclose(lw.compute(), ref.layer_weights()[2], rtol=1e-9)


def test_cluster_driver_memory_stays_below_a_third_of_the_weights(client):
    warm = _on_workers(0, [4, 6, 3], 3)  # code paths and connections set up before measuring
    balgraph.solve(balgraph.Problem.from_layers(warm))
    mats = _on_workers(2, [1024, 1600, 1600, 1600, 16], 800)
    nbytes = sum(W.nbytes for W in mats)
    tracemalloc.start()
    try:
        res = balgraph.solve(balgraph.Problem.from_layers(mats))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.converged
    assert peak < nbytes / 3, f"driver peak {peak / 1e6:.1f} MB for {nbytes / 1e6:.1f} MB of weights"
    ref = balgraph.solve(balgraph.Problem.from_layers([np.asarray(W) for W in mats]))
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-8)


def test_cluster_reads_and_writes_sharded_files(client, tmp_path):
    pytest.importorskip("safetensors")
    tensors = _tensors(7, [20, 30, 30, 4])
    index = _sharded(tmp_path, tensors, [["net.0.weight", "net.0.bias", "net.2.weight"], ["net.2.bias", "net.4.weight"]])
    chain = bio.read_layer_chain(index, chunks=(16, 20))
    res = balgraph.solve(chain.problem())
    out = tmp_path / "out"
    out.mkdir()
    chain.write(out / "b.safetensors.index.json", res.layer_weights(), res.layer_biases())
    got = _read_dir(out)
    mats = [tensors[f"net.{k}.weight"].astype(float) for k in (0, 2, 4)]
    biases = [tensors["net.0.bias"].astype(float), tensors["net.2.bias"].astype(float), None]
    ref = balgraph.solve(balgraph.Problem.from_layers(mats, biases))
    for k, W in zip((0, 2, 4), ref.layer_weights()):
        np.testing.assert_allclose(got[f"net.{k}.weight"], W.astype(np.float32), rtol=2.5e-7)
    np.testing.assert_allclose(got["net.2.bias"], ref.layer_biases()[1].astype(np.float32), rtol=2.5e-7)
    # the command line, on the same cluster by its address
    cli_out = tmp_path / "cli"
    cli_out.mkdir()
    assert main(["solve", str(index), "--scheduler", client.scheduler.address,
                 "-o", str(cli_out / "c.safetensors.index.json")]) == 0
    by_cli = _read_dir(cli_out)
    for name, value in got.items():
        np.testing.assert_allclose(by_cli[name], value, rtol=2.5e-7)
