"""The PyTorch adapter: balance_ keeps the function, balances the units, rescales optimizer state.

Balance is checked from the parameters directly with torch (in/out costs summed by hand), not
through the adapter's own problem.
"""

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import balgraph  # noqa: E402
import balgraph.torch as bt  # noqa: E402

TOL = 1e-11


def _skewed(model, seed=0):
    """Spread the parameter scales over e^±2 per module, far from balance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                s = float(torch.exp(4 * torch.rand(1, generator=g) - 2))
                mod.weight.mul_(s)
                if mod.bias is not None:
                    mod.bias.normal_(0, 0.3, generator=g)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1, generator=g)
                mod.running_var.uniform_(0.3, 3, generator=g)
                mod.weight.uniform_(0.2, 3, generator=g)
                mod.bias.uniform_(-1, 1, generator=g)
    return model


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 3))
    return _skewed(net).to(dtype)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 5, 3)
        self.pool, self.avg = nn.MaxPool2d(2), nn.AvgPool2d(2)
        self.fc = nn.Linear(5 * 1 * 1 * 4, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.c1(x)))  # 8x8 -> 4x4
        h = torch.relu(self.c2(nn.functional.pad(h, (1, 1, 1, 1))))  # 4x4
        h = self.avg(h)  # 2x2
        return self.fc(h.view(h.size(0), -1))


class ResNet(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.c0, self.bn0 = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 2)

    def forward(self, x):
        h = torch.relu(self.bn0(self.c0(x)))
        y = self.bn2(self.c2(torch.relu(self.bn1(self.c1(h)))))
        h = torch.relu(y + h)
        return self.fc(torch.flatten(self.pool(h), 1))


def resnet(dtype=torch.float64):
    torch.manual_seed(1)
    return _skewed(ResNet(), 1).to(dtype).eval()


def cnn(dtype=torch.float64):
    torch.manual_seed(2)
    return _skewed(CNN(), 2).to(dtype)


def _cost(t, p):
    return t.detach().abs().double() ** p


def _rel(a, b):
    return (a - b).abs() / (a + b)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_mlp_function_kept_and_units_balanced(p):
    net = mlp()
    x = torch.randn(9, 4, dtype=torch.float64)
    before = net(x)
    res = bt.balance_(net, p, x, tol=TOL)
    assert res.converged and res.cost_after < res.cost_before
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-12)
    lin = [m for m in net if isinstance(m, nn.Linear)]
    for a, b in zip(lin[:-1], lin[1:]):
        inc = _cost(a.weight, p).sum(1) + _cost(a.bias, p)
        out = _cost(b.weight, p).sum(0)
        assert _rel(inc, out).max() < 1e-9
    total = sum(_cost(t, p).sum() for t in net.parameters())
    assert float(total) == pytest.approx(res.cost_after, rel=1e-10)


def test_float32_outputs_kept():
    for make, shape in ((mlp, (9, 4)), (cnn, (3, 2, 8, 8)), (resnet, (3, 3, 6, 6))):
        net = make(torch.float32)
        x = torch.randn(*shape)
        before = net(x)
        bt.balance_(net, 2.0, x, tol=TOL)
        err = (net(x) - before).abs().max() / before.abs().max()
        assert err < 1e-5, make.__name__


@pytest.mark.parametrize("p", [1.5, 2.0])
def test_cnn_with_pooling_and_view(p):
    net = cnn()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    before = net(x)
    res = bt.balance_(net, p, x, tol=TOL)
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-12)
    # channel o of c1: its kernels and bias in, the kernel slices W2[:, o] out (each entry once)
    inc = _cost(net.c1.weight, p).sum((1, 2, 3)) + _cost(net.c1.bias, p)
    out = _cost(net.c2.weight, p).sum((0, 2, 3))
    assert _rel(inc, out).max() < 1e-9
    # channel o of c2 feeds the 4 flattened columns o*4 .. o*4+3 of fc
    inc = _cost(net.c2.weight, p).sum((1, 2, 3)) + _cost(net.c2.bias, p)
    out = _cost(net.fc.weight, p).reshape(3, 5, 4).sum((0, 2))
    assert _rel(inc, out).max() < 1e-9
    assert res.max_imbalance <= TOL


def test_resnet_bn_eval_residual_tie():
    net, p = resnet(), 2.0
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    before = net(x)
    res = bt.balance_(net, p, x, tol=TOL)
    assert res.converged and res.cost_after < res.cost_before
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-12)

    def bn_affine(bn):
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return a, bn.bias - a * bn.running_mean

    a0, b0 = bn_affine(net.bn0)
    a1, b1 = bn_affine(net.bn1)
    a2, b2 = bn_affine(net.bn2)
    # c0, c1, c2 channels: kernels in, the BN multiplier out
    for conv, a in ((net.c0, a0), (net.c1, a1), (net.c2, a2)):
        assert _rel(_cost(conv.weight, p).sum((1, 2, 3)), _cost(a, p)).max() < 1e-9
    # bn1 channel: (a1, b1) in, conv c2's slices out
    assert _rel(_cost(a1, p) + _cost(b1, p), _cost(net.c2.weight, p).sum((0, 2, 3))).max() < 1e-9
    # bn0[c] and bn2[c] are added: one tied scale, balanced as a pair (Section 8.2)
    inc = _cost(a0, p) + _cost(b0, p) + _cost(a2, p) + _cost(b2, p)
    out = _cost(net.c1.weight, p).sum((0, 2, 3)) + _cost(net.fc.weight, p).sum(0)
    assert _rel(inc, out).max() < 1e-9
    assert torch.allclose(net.bn0.running_var, resnet().bn0.running_var)


def test_to_graph_solves_like_the_problem():
    net = resnet()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    g = bt.to_graph(net, x, p=2.0)
    assert sum("tie" in d for _, d in g.nodes(data=True)) == 8
    res_graph = balgraph.solve(g, p=2.0, tol=TOL)
    res = bt.balance_(net, 2.0, x, tol=TOL)
    assert res_graph.cost_after == pytest.approx(res.cost_after, rel=1e-10)
    assert res_graph.cost_before == pytest.approx(res.cost_before, rel=1e-12)


def test_mlp_problem_matches_from_layers():
    net = mlp()
    pb, mapping = bt.to_problem(net, torch.zeros(1, 4, dtype=torch.float64))
    lin = [m for m in net if isinstance(m, nn.Linear)]
    ref = balgraph.Problem.from_layers([m.weight.detach().numpy() for m in lin],
                                       [m.bias.detach().numpy() for m in lin])
    np.testing.assert_array_equal(pb.weight, ref.weight)
    np.testing.assert_array_equal(pb.src, ref.src)
    assert mapping.labels[4] == "0[0]"
    bare = nn.Linear(3, 2)  # a leaf as the root: fx alone would see F.linear on constants
    pb, _ = bt.to_problem(bare, torch.zeros(1, 3))
    np.testing.assert_array_equal(pb.weight[:6], bare.weight.detach().numpy().ravel())


def _grads(model, loss_fn, params):
    model = copy.deepcopy(model)
    with torch.no_grad():
        for q, v in zip(model.parameters(), params):
            q.copy_(v)
    model.zero_grad()
    loss = loss_fn(model)
    loss.backward()
    return float(loss.detach()), [q.grad.clone() for q in model.parameters()]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_state_follows_the_gradients(kind):
    """After balancing, the state equals what the optimizer accumulates from the gradients of
    the balanced model along the mapped trajectory F∘θ_t (gradients there are ∇/F)."""
    net = mlp()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    loss_fn = lambda m: ((m(x) - y) ** 2).mean()  # noqa: E731
    opt = (torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9) if kind == "sgd"
           else torch.optim.Adam(net.parameters(), lr=1e-3))
    trajectory = []
    for _ in range(2):
        trajectory.append([q.detach().clone() for q in net.parameters()])
        opt.zero_grad()
        loss_fn(net).backward()
        opt.step()
    before = [q.detach().clone() for q in net.parameters()]
    bt.balance_(net, 2.0, x, optimizer=opt, tol=TOL)
    factors = [a.detach() / b for a, b in zip(net.parameters(), before)]  # entries are non-zero
    mapped = [_grads(net, loss_fn, [f * w for f, w in zip(factors, ws)]) for ws in trajectory]
    original = [_grads(net, loss_fn, ws) for ws in trajectory]
    assert mapped[0][0] == pytest.approx(original[0][0], rel=1e-12)  # same function on the orbit
    (_, g0), (_, g1) = mapped[0], mapped[1]
    for k, q in enumerate(net.parameters()):
        state = opt.state[q]
        if kind == "sgd":
            torch.testing.assert_close(state["momentum_buffer"], g1[k] + 0.9 * g0[k], rtol=1e-9, atol=0)
        else:
            b1, b2 = 0.9, 0.999
            torch.testing.assert_close(state["exp_avg"], (1 - b1) * (g1[k] + b1 * g0[k]), rtol=1e-9, atol=0)
            torch.testing.assert_close(state["exp_avg_sq"], (1 - b2) * (g1[k] ** 2 + b2 * g0[k] ** 2),
                                       rtol=1e-9, atol=0)


def test_unknown_optimizer_state_is_refused_before_any_change():
    net = mlp()
    x = torch.randn(4, 4, dtype=torch.float64)
    opt = torch.optim.Adadelta(net.parameters())
    net(x).sum().backward()
    opt.step()
    saved = copy.deepcopy(net.state_dict())
    with pytest.raises(balgraph.NetworkError, match="Adadelta"):
        bt.balance_(net, 2.0, x, optimizer=opt, tol=TOL)
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[k])


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(nn.functional.gelu(self.a(x)))))


def test_known_nonhomogeneous_op_is_counted_not_warned():
    torch.manual_seed(3)
    net = _skewed(Gelu(), 3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    before, w_a = net(x), net.a.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = bt.balance_(net, 2.0, x, tol=TOL)
    assert str(res.info["units"]) == "5 of 9 units free; fixed by GELU ×4"
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-12)
    assert torch.equal(net.a.weight, w_a)  # a's units kept scale 1
    assert res.problem.n_vars == 5  # only b's units are free
    inc = _cost(net.b.weight, 2).sum(1) + _cost(net.b.bias, 2)
    assert _rel(inc, _cost(net.c.weight, 2).sum(0)).max() < 1e-9


def test_unsupported_op_warns_once_with_the_summary():
    class Odd(Gelu):
        def forward(self, x):
            return self.c(torch.relu(self.b(torch.atan(self.a(x)) + torch.atan(self.a(x)))))

    net = _skewed(Odd(), 3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = bt.balance_(net, 2.0, x, tol=TOL)
    assert len(caught) == 1 and caught[0].category is bt.UnsupportedOpWarning
    msg = str(caught[0].message)
    assert "5 of 9 units free; fixed by unsupported op 'atan' ×4" in msg and "'atan' ×2" in msg
    assert res.converged and res.problem.n_vars == 5


def test_batchnorm_in_training_mode_warns():
    net = resnet().train()
    with pytest.warns(bt.UnsupportedOpWarning, match="eval"):
        bt.to_problem(net, torch.randn(2, 3, 6, 6, dtype=torch.float64))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        u = torch.relu(self.mid(h))
        v = torch.relu(self.mid(u))  # the same weights twice
        return self.out(torch.cat([u, v], dim=1))


def test_shared_module_and_concat_keep_function():
    torch.manual_seed(4)
    net = _skewed(Shared(), 4).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    before = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = bt.balance_(net, 2.0, x, tol=TOL)
    assert res.converged and res.cost_after < res.cost_before
    torch.testing.assert_close(net(x), before, rtol=1e-10, atol=1e-12)


def test_balance_every_and_imbalance_report():
    net = mlp()
    x = torch.randn(3, 4, dtype=torch.float64)
    report = bt.imbalance_report(net, 2.0, x)
    lin = [m for m in net if isinstance(m, nn.Linear)]
    inc = float((_cost(lin[0].weight, 2).sum() + _cost(lin[0].bias, 2).sum()))
    out = float(_cost(lin[1].weight, 2).sum())
    assert report.layers[0]["deficit"] == pytest.approx(inc - out, rel=1e-12)
    assert report.max_imbalance > 0.1 and "units: max" in str(report)
    every = bt.BalanceEvery(net, 3, 2.0, x, tol=TOL)
    assert every() is None and every() is None
    assert every() is not None and every.steps == 3
    after = bt.imbalance_report(net, 2.0, x)
    assert after.max_imbalance <= TOL
    assert all(abs(d["relative"]) < 1e-9 for d in after.layers)  # eq. 8.1 follows


def test_shape_queries_do_not_fix_units():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h.reshape(x.shape[0], h.size(1)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pb, _ = bt.to_problem(M(), torch.zeros(2, 3))
    assert pb.n_vars == 4


def test_import_guard(monkeypatch):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, balgraph, balgraph.cli, balgraph.io;"
                           " print('torch' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
    for name in [m for m in sys.modules if m == "balgraph.torch" or m.startswith("balgraph.torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        import balgraph.torch  # noqa: F401
