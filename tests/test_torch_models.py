"""The PyTorch adapter on real architectures: function kept, honest reports, p = ∞ on convs,
shared parameters, guarded writes (issues 13 and 14).

Balance is checked from the parameter tensors directly (maxima and sums written out here), not
through the adapter's own problem.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = nn.functional

import balgraph  # noqa: E402
import balgraph.torch as bt  # noqa: E402
from torch_zoo import ZOO, ResNet, randomize_  # noqa: E402

TOL = 1e-11


def zoo(name, seed=1):
    torch.manual_seed(0)
    model, x = ZOO[name]()
    x = x.double() if x.is_floating_point() else x
    return randomize_(model.double(), seed=seed, x=x), x


def _rel_change(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, saved):
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_function_kept_cost_down_report_agrees(name):
    model, x = zoo(name)
    with torch.no_grad():
        before = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing in the zoo needs a warning
        res = bt.balance_(model, 2.0, x, tol=TOL)
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    assert res.converged and res.cost_after < res.cost_before and res.max_imbalance <= TOL
    report = res.info["units"]
    assert 0 < report.n_free <= report.n_units and report.n_free == int((~res.problem.fixed).sum())
    after = bt.imbalance_report(model, 2.0, x)
    assert after.unit_imbalance.size == res.problem.n_vars
    assert after.max_imbalance <= 10 * TOL


def test_float32_zoo_outputs_kept():
    for name in ("resnet", "vit", "efficientnet"):
        model, x = zoo(name)
        model = model.float()
        x = x.float() if x.is_floating_point() else x
        with torch.no_grad():
            before = model(x)
        bt.balance_(model, 2.0, x, tol=1e-9)
        with torch.no_grad():
            assert _rel_change(model(x), before) < 1e-5, name


# ------------------------------------------------------------------ honest reports
def test_zero_init_resnet_dead_ends_announced_and_imbalance_agrees():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    model = randomize_(ResNet(4).double(), seed=2, x=x, zero_init_last=True)
    with torch.no_grad():
        before = model(x)
    with pytest.warns(bt.FixedUnitsWarning, match=r"72 dead-end unit\(s\)") as caught:
        res = bt.balance_(model, 2.0, x, tol=TOL)
    assert len(caught) == 1
    report = res.info["units"]
    # conv1, bn1 and conv2 of each block (4 + 4 + 8 + 8 channels) feed a zero BatchNorm
    assert report.dead_ends == 3 * (4 + 4 + 8 + 8) and report.n_free == report.n_units - 72
    assert str(report).endswith("fixed by dead ends ×72")
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    after = bt.imbalance_report(model, 2.0, x)
    assert res.converged and res.max_imbalance <= TOL
    assert after.unit_imbalance.size == res.problem.n_vars  # the same units, nothing more
    assert after.max_imbalance == pytest.approx(res.max_imbalance, abs=1e-12)
    with pytest.raises(balgraph.NoFiniteOptimumError, match="layers.0.conv1"):
        bt.balance_(model, 2.0, x, unreachable="raise")
    with pytest.raises(balgraph.NetworkError, match="prune"):
        bt.balance_(model, 2.0, x, unreachable="prune")


def test_gelu_mlp_and_bare_layers_give_the_trivial_result():
    torch.manual_seed(0)
    for model, x in ((nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), torch.randn(2, 3)),
                     (nn.Linear(3, 2), torch.randn(2, 3)), (nn.Conv2d(3, 2, 3), torch.randn(1, 3, 5, 5))):
        saved = _state(model)
        res = bt.balance_(model, 2.0, x)
        assert res.converged and res.problem.n_vars == 0 and res.cost_after == res.cost_before
        assert _unchanged(model, saved)
    assert str(res.info["units"]) == "0 of 0 units free"


def test_train_mode_batchnorm_warns_with_the_fix_and_keeps_eval_function():
    for name in ("resnet", "efficientnet"):  # nn.BatchNorm2d, and timm's F.batch_norm
        model, x = zoo(name)
        with torch.no_grad():
            before = model(x)
        model.train()
        with pytest.warns(bt.UnsupportedOpWarning, match=r"training mode.*model\.eval\(\)"):
            res = bt.balance_(model, 2.0, x, tol=TOL)
        assert res.info["units"].n_free > 0  # the affine outputs are still balanced
        with torch.no_grad():
            assert _rel_change(model.eval()(x), before) < 1e-10, name


# ------------------------------------------------------------------ p = ∞ on convolutions
class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1, groups=1)
        self.dw = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.fc1, self.fc2 = nn.Linear(3 * 2 * 2, 5), nn.Linear(5, 2)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.c1(x)), 2)
        h = F.avg_pool2d(torch.relu(self.dw(torch.relu(self.c2(h)))), 2)
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def test_p_inf_on_convolutions_max_in_equals_max_out():
    torch.manual_seed(5)
    model = SmallCNN().double()
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.mul_(math.exp(2 * math.sin(3 * k)))  # spread the scales, far from max-balance
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    res = bt.balance_(model, float("inf"), x, tol=1e-12)
    assert res.converged and res.method == "max_balance"
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    m = model
    amax = lambda t, dims: t.detach().abs().amax(dims)  # noqa: E731
    pairs = [  # (max over incoming entries, max over outgoing entries) per channel, by hand
        (torch.maximum(amax(m.c1.weight, (1, 2, 3)), m.c1.bias.abs()), amax(m.c2.weight, (0, 2, 3))),
        (torch.maximum(amax(m.c2.weight, (1, 2, 3)), m.c2.bias.abs()), amax(m.dw.weight, (1, 2, 3))),
        (torch.maximum(amax(m.dw.weight, (1, 2, 3)), m.dw.bias.abs()),
         amax(m.fc1.weight.reshape(5, 3, 4), (0, 2))),  # channel c feeds the 4 flattened columns
        (torch.maximum(amax(m.fc1.weight, 1), m.fc1.bias.abs()), amax(m.fc2.weight, 0)),
    ]
    for inc, out in pairs:
        torch.testing.assert_close(inc, out, rtol=1e-9, atol=0)
    report = bt.imbalance_report(model, float("inf"), x)
    assert report.max_imbalance <= 1e-12 and report.unit_imbalance.size == res.problem.n_vars


def test_p_inf_resnet_with_ties_keeps_function():
    model, x = zoo("resnet")
    with torch.no_grad():
        before = model(x)
    res = bt.balance_(model, float("inf"), x, tol=1e-12)
    assert res.converged
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10


# ------------------------------------------------------------------ shared parameters (issue 13)
class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):
        return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize("cls", [TwoBranch, Chain])
def test_parameter_shared_by_two_modules_is_one_set_of_units(cls):
    torch.manual_seed(7)
    model = cls().double()
    model.b.weight = model.a.weight  # one Parameter, two modules
    with torch.no_grad():
        model.c.weight.mul_(20.0)
    x = torch.randn(6, model.a.in_features, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    res = bt.balance_(model, 2.0, x, tol=TOL)
    assert model.b.weight is model.a.weight and res.converged
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    if cls is TwoBranch:  # a's and b's neurons share the weight rows: tied, balanced together
        assert res.problem.n_vars == 4 and res.cost_after < res.cost_before


def test_tied_embedding_and_head_keep_function():
    model, x = zoo("gpt")
    model.lm_head.weight = model.wte.weight  # GPT-2's weight tying: an embedding and a Linear
    with torch.no_grad():
        before = model(x)
    res = bt.balance_(model, 2.0, x, tol=TOL)
    assert res.converged
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    assert "parameter 'wte.weight' shared by ops of different kinds" in res.info["units"].fixed_by


# ------------------------------------------------------------------ nothing non-finite written
def test_overflow_in_float16_refused_model_untouched():
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 100)).half()
    with torch.no_grad():
        model[0].weight.fill_(6e4)
        model[0].bias.zero_()
        model[2].weight.fill_(6e4)  # out norm 6e5: balanced, the incoming weight is 1.9e5 > 65504
        model[2].bias.zero_()
    saved = _state(model)
    with pytest.raises(balgraph.NetworkError, match="non-finite values into '0.weight'"):
        bt.balance_(model, 2.0, torch.full((1, 1), 1e-3, dtype=torch.float16))
    assert _unchanged(model, saved)


def test_underflow_refused_model_untouched():
    model = nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 1)).half()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[5e4, 5e4, 5e4, 1e-4]]))
        model[0].bias.zero_()
        model[2].weight.fill_(1e-3)
        model[2].bias.zero_()
    saved = _state(model)
    with pytest.raises(balgraph.NetworkError, match="underflow"):
        bt.balance_(model, 2.0, torch.ones(1, 4, dtype=torch.float16))
    assert _unchanged(model, saved)


@pytest.mark.parametrize("p", [1e-6, 0.0, -1.0, float("nan"), "2"])
def test_bad_or_tiny_p_never_writes_nan(p):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).double()
    saved = _state(model)
    x = torch.randn(3, 1, dtype=torch.float64)
    try:
        bt.balance_(model, p, x)
    except (balgraph.NetworkError, balgraph.SolverError):
        assert _unchanged(model, saved)
    for t in model.state_dict().values():
        assert torch.isfinite(t).all()


def test_meta_device_gets_a_clear_error():
    model = nn.Sequential(nn.Linear(3, 4, device="meta"), nn.ReLU(), nn.Linear(4, 2, device="meta"))
    with pytest.raises(balgraph.NetworkError, match="meta device.*to_empty"):
        bt.balance_(model, 2.0, torch.zeros(1, 3))


# ------------------------------------------------------------------ forms of the same symmetry
class Block(nn.Module):
    """ConvNeXt-like block with an inline layer scale and a hand-written channels-first LN."""

    def __init__(self, c, inline):
        super().__init__()
        self.inline = inline
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.w, self.b = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.rand(c))
        self.fc1, self.fc2 = nn.Conv2d(c, 2 * c, 1), nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.norm = nn.GroupNorm(1, c)

    def forward(self, x):
        h = self.conv(x)
        if self.inline:
            u = h.mean(1, keepdim=True)
            s = (h - u).pow(2).mean(1, keepdim=True)
            h = (h - u) / torch.sqrt(s + 1e-6)
            h = self.w[:, None, None] * h + self.b[:, None, None]
        else:
            h = F.group_norm(h, 1, self.w, self.b)
        h = self.fc2(torch.relu(self.fc1(h)))
        h = h * self.gamma.view(1, -1, 1, 1) if self.inline else h * self.gamma[:, None, None]
        return x + h


def test_inline_layer_scale_and_handwritten_norm_match_functional_forms():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    counts = []
    for inline in (True, False):
        model = Block(4, inline).double()
        with torch.no_grad():
            before = model(x)
        res = bt.balance_(model, 2.0, x, tol=TOL)
        with torch.no_grad():
            assert _rel_change(model(x), before) < 1e-10
        counts.append((res.info["units"].n_free, res.problem.n_vars))
    # free: the norm's affine outputs (4), fc1 (8), fc2 (4, the layer scale absorbs them)
    assert counts[0] == counts[1] == (16, 16)


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_in, self.kv_in = nn.Linear(3, 6), nn.Linear(5, 4)
        self.attn = nn.MultiheadAttention(6, 2, kdim=4, vdim=4, add_bias_kv=True)
        self.out = nn.Linear(6, 2)

    def forward(self, x, y):
        q, kv = torch.relu(self.q_in(x)), torch.relu(self.kv_in(y))
        return self.out(self.attn(q, kv, kv, need_weights=False)[0])


def test_multihead_attention_with_kdim_vdim_and_bias_kv():
    torch.manual_seed(0)
    model = CrossAttention().double().eval()
    x, y = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(7, 2, 5, dtype=torch.float64)
    with torch.no_grad():
        before = model(x, y)
    res = bt.balance_(model, 2.0, (x, y), tol=TOL)
    with torch.no_grad():
        assert _rel_change(model(x, y), before) < 1e-10
    # q_in (6) and kv_in (4) feed only linear projections; values (6) and out_proj (6) are units
    assert res.info["units"].n_free == 22
    assert res.info["units"].fixed_by == {"attention scores (Q/K)": 12}


# ------------------------------------------------------------------ training
def test_balance_every_reuses_the_structure_and_adam_state_follows():
    model, x = zoo("llama")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x).square().mean().backward()
    opt.step()
    every = bt.BalanceEvery(model, 1, 2.0, x, optimizer=opt, tol=TOL)
    old = {p: (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)})
           for p in model.parameters()}
    with torch.no_grad():
        before = model(x)
    every()
    parts = every.network._struct["parts"]
    every()
    assert every.network._struct["parts"] is parts  # structure, merge plans: built once
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    for p, (theta, state) in old.items():
        f = p.detach() / theta  # parameters are non-zero
        torch.testing.assert_close(opt.state[p]["exp_avg"], state["exp_avg"] / f, rtol=1e-9, atol=1e-300)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], state["exp_avg_sq"] / f**2, rtol=1e-9,
                                   atol=1e-300)


def test_tracing_does_not_touch_batchnorm_statistics():
    model, x = zoo("resnet")
    model.train()
    saved = _state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt.to_problem(model, x)
    assert _unchanged(model, saved)


def test_report_is_one_line_and_copied_to_the_network():
    model, x = zoo("vit")
    pb, network = bt.to_problem(model, x)
    r = network.report
    assert str(r) == ("88 of 224 units free; fixed by GELU ×64, LayerNorm input ×40,"
                      " attention scores (Q/K) ×32")
    assert r.n_free == pb.n_vars and not r.needs_attention
    copy.deepcopy(r)


class TokenMixer(nn.Module):
    """Learned per-position biases and a class token on free units (no norm in between)."""

    def __init__(self, n=5, d=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, d), nn.Linear(d, 2)
        self.pos = nn.Parameter(torch.randn(n + 1, d))
        self.cls = nn.Parameter(torch.randn(1, 1, d))

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1) + self.pos
        return self.fc2(h.mean(1))


def test_class_token_and_position_biases_follow_free_units():
    torch.manual_seed(1)
    model = TokenMixer().double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        model.fc2.weight.mul_(30.0)
        before = model(x)
    res = bt.balance_(model, 2.0, x, tol=TOL)
    with torch.no_grad():
        assert _rel_change(model(x), before) < 1e-10
    assert res.info["units"].n_free == 4 and res.cost_after < res.cost_before
    # each fc1 channel: its row, its bias, its class-token entry and its 6 position biases in
    p = 2
    inc = (model.fc1.weight.abs() ** p).sum(1) + model.fc1.bias.abs() ** p + \
        (model.cls[0, 0].abs() ** p) + (model.pos.abs() ** p).sum(0)
    torch.testing.assert_close(inc, (model.fc2.weight.abs() ** p).sum(0), rtol=1e-9, atol=0)
