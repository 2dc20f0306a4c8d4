"""Cross-layer equalization of PyTorch models: torch.ao's ``equalize`` fixed point (minmax),
AIMET's formula iterated (absmax), BatchNorm folding by PyTorch's own fuse, depthwise convs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
bt = pytest.importorskip("balgraph.torch")
nn = torch.nn

from balgraph.errors import NetworkError, OptionError  # noqa: E402


def seeded(model, seed):
    """Channels scaled over e^±2, so that equalization has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.normal_(generator=g)
                shape = (-1,) + (1,) * (m.weight.ndim - 1)
                m.weight.mul_(torch.exp(4 * torch.rand(m.weight.shape[0], generator=g) - 2).view(shape))
                m.bias.normal_(generator=g)
    return model.double().eval()


def linear_chain(seed):
    return seeded(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 3)), seed)


def conv_chain(seed):
    return seeded(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(6, 4, 1)), seed)


def size(w, kind, axis):
    """A channel's size over every other axis of the tensor (the peers' channel_range)."""
    dims = tuple(d for d in range(w.ndim) if d != axis)
    if kind == "absmax":
        return w.abs().amax(dim=dims)
    return w.amax(dim=dims) - w.amin(dim=dims)


def aimet_iterated(model, kind="absmax", sweeps=20_000):
    """AIMET's CLE on consecutive layer pairs, s = sqrt(r1 / r2), repeated to its fixed point."""
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for _ in range(sweeps):
            moved = 0.0
            for a, b in zip(layers, layers[1:]):
                s = torch.sqrt(size(a.weight, kind, 0) / size(b.weight, kind, 1))
                a.weight.div_(s.view((-1,) + (1,) * (a.weight.ndim - 1)))
                a.bias.div_(s)
                b.weight.mul_(s.view((1, -1) + (1,) * (b.weight.ndim - 2)))
                moved = max(moved, float(s.log().abs().max()))
            if moved < 1e-15:
                break
    return model


def gaps(model, kind):
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    out = []
    for a, b in zip(layers, layers[1:]):
        r1, r2 = size(a.weight, kind, 0), size(b.weight, kind, 1)
        out.append(((r1 - r2).abs() / (r1 + r2)).max().item())
    return max(out)


def params(model):
    return [t.detach().clone() for t in model.parameters()]


@pytest.mark.parametrize("build,x_shape", [(linear_chain, (4, 5)), (conv_chain, (2, 3, 6, 6))])
def test_minmax_reaches_torch_ao_equalize(build, x_shape):
    from torch.ao.quantization._equalize import equalize

    x = torch.randn(*x_shape, dtype=torch.float64)
    ours, ref = build(0), build(0)
    y = ref(x)
    names = [n for n, m in ref.named_children() if isinstance(m, (nn.Linear, nn.Conv2d))]
    equalize(ref, [[a, b] for a, b in zip(names, names[1:])], threshold=1e-14, inplace=True)
    res = bt.balance_(ours, float("inf"), x, range="minmax", tol=1e-13)
    assert res.converged
    # torch.ao adds 1e-9 to the second range: its fixed point differs by about that much
    for a, b in zip(params(ours), params(ref)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
    assert gaps(ours, "minmax") <= 1e-12
    torch.testing.assert_close(ours(x), y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("build,x_shape", [(linear_chain, (4, 5)), (conv_chain, (2, 3, 6, 6))])
def test_absmax_reaches_aimet_iterated(build, x_shape):
    x = torch.randn(*x_shape, dtype=torch.float64)
    ours, ref = build(1), aimet_iterated(build(1))
    y = ours(x)
    res = bt.balance_(ours, float("inf"), x, range="absmax", tol=1e-13)
    assert res.converged and res.method == "max_balance"
    for a, b in zip(params(ours), params(ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours(x), y, rtol=1e-9, atol=1e-12)


def test_biases_count_only_on_request():
    x = torch.randn(4, 5, dtype=torch.float64)
    a, b = linear_chain(2), linear_chain(2)
    with torch.no_grad():
        for m in (a[0], b[0]):
            m.bias.mul_(50.0)
    bt.balance_(a, float("inf"), x, range="absmax")
    bt.balance_(b, float("inf"), x, range="absmax", biases="include")
    assert gaps(a, "absmax") <= 1e-9
    w_in = torch.cat([b[0].weight, b[0].bias[:, None]], dim=1)
    r1, r2 = size(w_in, "absmax", 0), size(b[2].weight, "absmax", 1)
    assert ((r1 - r2).abs() / (r1 + r2)).max() <= 1e-9
    report = bt.imbalance_report(b, float("inf"), x, range="absmax", biases="include")
    assert report.max_imbalance <= 1e-9
    assert bt.imbalance_report(b, float("inf"), x, range="absmax").max_imbalance > 1e-3


def test_batchnorm_folded_by_torch_then_equalized():
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 5, 1), nn.BatchNorm2d(5)).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.1, 3.0, generator=g)
                m.bias.normal_(generator=g)
    with pytest.raises(NetworkError, match="eval"):
        bt.fold_batchnorm(net)
    net.eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = bt.fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-10, atol=1e-12)
    res = bt.balance_(folded, float("inf"), x, range="minmax", tol=1e-12)
    assert res.converged
    torch.testing.assert_close(folded(x), net(x), rtol=1e-9, atol=1e-12)
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    # channel o of the first conv feeds depthwise channel o only; that one feeds column o
    dense, dw, pw = (c.weight for c in convs)
    for w_in, w_out in ((size(dense, "minmax", 0), size(dw, "minmax", 0)),
                        (size(dw, "minmax", 0), size(pw, "minmax", 1))):
        assert ((w_in - w_out).abs() / (w_in + w_out)).max() <= 1e-11


def test_range_needs_p_inf():
    net = linear_chain(4)
    x = torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(OptionError, match="p=float"):
        bt.balance_(net, 2.0, x, range="minmax")
