"""Model files: PyTorch state dicts and safetensors of layer chains, balanced in place of the same names."""

import json

import numpy as np
import pytest

import balgraph
import balgraph.io as bio
from balgraph.cli import main
from balgraph.errors import NetworkError
from balgraph.files.models import load_tensors, save_tensors


def _mlp(x, mats, biases):
    """The network function by hand: ReLU hidden layers, linear output."""
    for k, (w, b) in enumerate(zip(mats, biases)):
        x = x @ w.T + (0 if b is None else b)
        if k < len(mats) - 1:
            x = np.maximum(x, 0)
    return x


def _chain(rng, sizes, prefix="", dtype=np.float32, bias=True, step=2):
    out = {}
    for k, (n, m) in enumerate(zip(sizes, sizes[1:])):
        name = f"{prefix}{step * k}"
        out[f"{name}.weight"] = (rng.normal(size=(m, n)) * np.exp(rng.uniform(-2, 2))).astype(dtype)
        if bias:
            out[f"{name}.bias"] = rng.normal(size=m).astype(dtype)
    return out


def _layers(tensors):
    mods = list(dict.fromkeys(k.rpartition(".")[0] for k in tensors))
    return ([tensors[f"{m}.weight"].astype(np.float64) for m in mods],
            [tensors[f"{m}.bias"].astype(np.float64) if f"{m}.bias" in tensors else None for m in mods])


def _check_balanced_copy(before, after, rtol):
    assert sorted(after) == sorted(before)  # (safetensors stores tensors sorted by dtype and name)
    after = {k: after[k] for k in before}
    for name in before:
        assert after[name].dtype == before[name].dtype and after[name].shape == before[name].shape, name
    mats, biases = _layers(before)
    new_mats, new_biases = _layers(after)
    x = np.random.default_rng(9).normal(size=(256, mats[0].shape[1]))
    y0, y1 = _mlp(x, mats, biases), _mlp(x, new_mats, new_biases)
    assert np.max(np.abs(y1 - y0)) / np.max(np.abs(y0)) <= rtol
    cost = lambda ms, bs: sum(float(np.sum(w ** 2)) for w in ms) + sum(float(np.sum(b ** 2)) for b in bs if b is not None)  # noqa: E731
    assert cost(new_mats, new_biases) < 0.9 * cost(mats, biases)
    # balanced: every hidden unit's in-cost equals its out-cost (to the dtype's precision)
    for k in range(len(mats) - 1):
        inc = np.sum(new_mats[k] ** 2, axis=1) + (0 if new_biases[k] is None else new_biases[k] ** 2)
        out = np.sum(new_mats[k + 1] ** 2, axis=0)
        assert np.max(np.abs(inc - out) / (inc + out)) < (1e-5 if rtol > 1e-9 else 1e-9)


def _read_tensors(path):
    fmt = bio.detect_format(path)
    arrays, dtypes, _ = load_tensors(path, fmt)
    return {k: a.astype(dtypes[k]) for k, a in arrays.items()}


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_safetensors_balanced_by_the_cli(tmp_path, capsys, dtype, rtol):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    tensors = _chain(rng, [6, 12, 12, 8, 3], prefix="net.", dtype=dtype)
    st.save_file(tensors, tmp_path / "model.safetensors", metadata={"origin": "test"})
    assert main(["solve", str(tmp_path / "model.safetensors"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["converged"] and summary["output"].endswith("model.balanced.safetensors")
    after = st.load_file(tmp_path / "model.balanced.safetensors")
    _check_balanced_copy(tensors, {k: after[k] for k in tensors}, rtol)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.balanced.safetensors", "np") as fh:
        assert fh.metadata() == {"origin": "test"}
    assert main(["check", str(tmp_path / "model.balanced.safetensors"), "--fail-above", "1e-5"]) == 0


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-12)])
def test_state_dict_balanced_by_the_cli(tmp_path, capsys, dtype, rtol):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 9), torch.nn.ReLU(),
                                torch.nn.Linear(9, 2)).to(getattr(torch, dtype))
    with torch.no_grad():
        model[0].weight.mul_(20.0)
        model[4].weight.mul_(0.05)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    assert main(["solve", str(tmp_path / "model.pt")]) == 0
    capsys.readouterr()
    state = torch.load(tmp_path / "model.balanced.pt", weights_only=True)
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    before = {k: v.numpy() for k, v in model.state_dict().items()}
    _check_balanced_copy(before, {k: v.numpy() for k, v in state.items()}, rtol)
    # the model loads the file and computes the same function
    x = torch.randn(64, 5, dtype=getattr(torch, dtype))
    with torch.no_grad():
        y0 = model(x)
        model.load_state_dict(state)
        assert float((model(x) - y0).abs().max() / y0.abs().max()) <= rtol


def test_python_api_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    rng = np.random.default_rng(1)
    tensors = _chain(rng, [4, 7, 5, 2], dtype=np.float32, step=1)
    save_tensors(tensors, tmp_path / "m.safetensors")
    chain = bio.read_layer_chain(tmp_path / "m.safetensors")
    assert chain.modules == ["0", "1", "2"] and chain.dtypes["1.weight"] == "float32"
    pb = bio.read_network(tmp_path / "m.safetensors")
    assert pb.n_vars == 7 + 5
    res = balgraph.solve(pb)
    bio.write_network(res, tmp_path / "out.safetensors", like=chain)
    _check_balanced_copy(tensors, _read_tensors(tmp_path / "out.safetensors"), 1e-6)
    # without a template: generic names, float64
    bio.write_network(res, tmp_path / "plain.safetensors")
    plain = _read_tensors(tmp_path / "plain.safetensors")
    assert sorted(plain) == ["0.bias", "0.weight", "1.bias", "1.weight", "2.bias", "2.weight"]
    assert plain["0.weight"].dtype == np.float64
    np.testing.assert_allclose(plain["1.weight"], res.layer_weights()[1])


def test_safetensors_layers_in_natural_order(tmp_path):
    pytest.importorskip("safetensors")
    rng = np.random.default_rng(2)
    sizes = [3] + [4 + k % 3 for k in range(12)] + [2]  # 13 layers: "10" sorts before "2" as text
    tensors = _chain(rng, sizes, prefix="layers.", dtype=np.float64, step=1)
    save_tensors(tensors, tmp_path / "deep.safetensors")
    chain = bio.read_layer_chain(tmp_path / "deep.safetensors")
    assert chain.modules == [f"layers.{k}" for k in range(13)]


def test_named_modules_ordered_by_shape_when_names_disagree(tmp_path):
    pytest.importorskip("safetensors")
    rng = np.random.default_rng(3)
    tensors = {"encoder.weight": rng.normal(size=(5, 3)), "decoder.weight": rng.normal(size=(2, 5))}
    save_tensors(tensors, tmp_path / "ed.safetensors")  # natural order: decoder first, which does not chain
    assert bio.read_layer_chain(tmp_path / "ed.safetensors").modules == ["encoder", "decoder"]


def test_shapes_that_do_not_chain_are_explained(tmp_path, capsys):
    pytest.importorskip("safetensors")
    tensors = {"fc1.weight": np.ones((4, 3)), "fc2.weight": np.ones((2, 5)), "fc3.weight": np.ones((4, 2))}
    save_tensors(tensors, tmp_path / "bad.safetensors")
    with pytest.raises(NetworkError, match=r"fc2.weight expects 5 inputs but fc1.weight gives 4 outputs"):
        bio.read_layer_chain(tmp_path / "bad.safetensors")
    assert main(["check", str(tmp_path / "bad.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "--layer-order" in err and "bad.safetensors" in err and err.count("\n") == 1


def test_layer_order_option(tmp_path, capsys):
    pytest.importorskip("safetensors")
    tensors = {"a.weight": np.ones((3, 3)) * 2, "b.weight": np.ones((3, 3)), "c.weight": np.ones((3, 3)) * 0.5}
    save_tensors(tensors, tmp_path / "sq.safetensors")
    assert bio.read_layer_chain(tmp_path / "sq.safetensors", order=["c", "a", "b"]).modules == ["c", "a", "b"]
    assert main(["check", str(tmp_path / "sq.safetensors"), "--layer-order", "c,a,b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["free_units"] == 6


@pytest.mark.parametrize("extra, words", [
    ({"bn.weight": np.ones(4), "bn.bias": np.zeros(4), "bn.running_mean": np.zeros(4)},
     ["bn.weight", "normalization", "bn.running_mean"]),
    ({"conv.weight": np.ones((4, 3, 3, 3))}, ["conv.weight", "convolution"]),
    ({"step": np.array([3], dtype=np.int64)}, ["step", "not a weight or bias"]),
])
def test_tensors_outside_the_chain_are_refused(tmp_path, extra, words):
    pytest.importorskip("safetensors")
    tensors = {"0.weight": np.ones((4, 3)), "0.bias": np.ones(4), "1.weight": np.ones((2, 4)), **extra}
    save_tensors(tensors, tmp_path / "m.safetensors")
    with pytest.raises(NetworkError, match="stale") as exc:
        bio.read_layer_chain(tmp_path / "m.safetensors")
    assert all(w in str(exc.value) for w in words) and "m.safetensors" in str(exc.value)


def test_float16_overflow_is_refused(tmp_path):
    pytest.importorskip("safetensors")
    tensors = {"0.weight": np.full((2, 2), 6e4, np.float16), "1.weight": np.full((1, 2), 1e-3, np.float16)}
    save_tensors(tensors, tmp_path / "h.safetensors")
    chain = bio.read_layer_chain(tmp_path / "h.safetensors")
    big = [np.full((2, 2), 1e6), np.full((1, 2), 1e-3)]
    with pytest.raises(NetworkError, match="0.weight does not fit in float16"):
        chain.write(tmp_path / "o.safetensors", big, [None, None])
    tiny = [np.full((2, 2), 1.0), np.full((1, 2), 1e-12)]
    with pytest.raises(NetworkError, match="1.weight does not fit in float16.*round to 0"):
        chain.write(tmp_path / "o.safetensors", tiny, [None, None])


def test_torch_files_are_loaded_with_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(model, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(NetworkError, match=r"weights_only=True.*state_dict"):
        bio.read_layer_chain(tmp_path / "whole.pt")
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(NetworkError, match="not a state dict"):
        bio.read_layer_chain(tmp_path / "ckpt.pt")
    torch.save({"0.weight": torch.ones(4, 3, dtype=torch.complex64), "2.weight": torch.ones(2, 4)},
               tmp_path / "cplx.pt")
    with pytest.raises(NetworkError, match=r"0.weight \(complex64"):
        bio.read_layer_chain(tmp_path / "cplx.pt")


def test_bfloat16_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(torch.bfloat16)
    torch.save(model.state_dict(), tmp_path / "bf.pth")
    nf = bio.open_network(tmp_path / "bf.pth")
    res = balgraph.solve(nf.problem)
    nf.write(res.weight_array, tmp_path / "out.pth")
    state = torch.load(tmp_path / "out.pth", weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    nf.write(res.weight_array, tmp_path / "out.safetensors")  # same chain, other container
    if pytest.importorskip("safetensors.torch"):
        from safetensors.torch import load_file

        assert {k: v.dtype for k, v in load_file(tmp_path / "out.safetensors").items()} == {
            k: torch.bfloat16 for k in state}
