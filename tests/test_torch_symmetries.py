"""Brute force: the adapter's free units are exactly the model's channel scale symmetries.

For every channel of every parametrized op of a zoo of architectures (``torch_zoo``), the test
scales that channel alone — its *incoming* parameter slice times λ, its *outgoing* slices
divided by λ — and checks the model's output on random inputs (float64, relative 1e-9) for
λ = 7, 0.3 and 50 (50 drives every ReLU6 that is ever positive into saturation). The channels
(and groups of channels) for which the output is unchanged must be exactly the adapter's free
variables: no missed symmetry, no false one.

How the slices are found, without the adapter
---------------------------------------------
* **Incoming** slices come from a table of module types (:func:`in_slices`): row ``c`` and bias
  ``c`` of a ``Linear``, filter ``c`` of a ``Conv``, ``γ_c, β_c`` of a BatchNorm or LayerNorm,
  ``γ_c`` of a ``LayerScale``, column ``c`` of an ``Embedding``, the value rows of a
  ``MultiheadAttention``. That is what "output channel ``c`` of this op" means; no tracing.
* **Outgoing** slices are *discovered by running the model*: every module of the table gets a
  forward pre-hook that records its inputs. After scaling the incoming slice, the first recorded
  input (in execution order) that differs from the unscaled run is where the channel went. If
  every channel that changed there changed by exactly the factor λ and that module can absorb
  it (a table of *input* slices, :func:`input_slices`: column ``j`` of a ``Linear``, input
  channel ``j`` of a ``Conv``, ``γ_j`` of a BatchNorm with ``running_mean_j · λ``, ``γ_j`` of a
  ``LayerScale``, the ``j``-th input columns of a ``MultiheadAttention``), those slices are
  divided by λ and the model is run again; this repeats until every recorded input equals the
  unscaled run's, except the inputs compensated so (still exactly λ times). A
  LayerNorm input, a softmax, a GELU, a gate, ... makes the channel change non-proportionally or
  reach a module that cannot absorb it: no symmetry. Finally the outputs are compared.
* **Groups** (residual streams) are found the same way: channels that fail alone at the same
  module input (a residual addition feeds it) are merged and tried together, repeatedly. The
  adapter's tie groups are also tried as groups (so a fixed tie group is confirmed fixed).

Nothing here reads the adapter's decisions: the tables know module types only, the model's
output decides. The adapter is consulted only at the end, to compare. The parameters are
generic (random, non-zero): a zero slice makes symmetries that depend on values, not on the
architecture (the zero-initialised ResNet is checked in ``test_torch_models.py``).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import balgraph.torch as bt  # noqa: E402
from torch_zoo import ZOO, BatchNormAct2d, LayerNorm2d, LayerScale, randomize_  # noqa: E402, F401

RTOL = 1e-9
LAMBDAS = (7.0, 0.3, 50.0)


def _channels(m: nn.Module) -> list[tuple[str, int]]:
    """``(part, n)``: the output channels of module ``m`` that the brute force scales."""
    if isinstance(m, nn.MultiheadAttention):
        return [(part, m.embed_dim) for part in ("q", "k", "v", "out")]
    if isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return [("", m.out_features)]
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return [("", m.out_channels)]
    if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
        return [("", m.weight.numel())]
    if isinstance(m, LayerScale):
        return [("", m.gamma.numel())]
    if isinstance(m, nn.Embedding):
        return [("", m.embedding_dim)]
    return []


def in_slices(m: nn.Module, part: str, c: int) -> list[tuple[torch.Tensor, tuple]]:
    """The parameter entries that make output channel ``c`` (scaled by λ)."""
    if isinstance(m, nn.MultiheadAttention):
        E = m.embed_dim
        if part == "out":
            return [(m.out_proj.weight, (c,))] + ([(m.out_proj.bias, (c,))] if m.out_proj.bias is not None else [])
        row = {"q": 0, "k": E, "v": 2 * E}[part] + c
        return [(m.in_proj_weight, (row,))] + ([(m.in_proj_bias, (row,))] if m.in_proj_bias is not None else [])
    if isinstance(m, nn.ConvTranspose2d):
        return [(m.weight, (slice(None), c))] + ([(m.bias, (c,))] if m.bias is not None else [])
    if isinstance(m, nn.Embedding):
        return [(m.weight, (slice(None), c))]
    if isinstance(m, LayerScale):
        return [(m.gamma, (c,))]
    out = [(m.weight, (c,))]
    return out + ([(m.bias, (c,))] if getattr(m, "bias", None) is not None else [])


def internal_out(m: nn.Module, part: str, c: int) -> list[tuple[torch.Tensor, tuple, int]]:
    """Outgoing slices inside a module (no hook sees them): MultiheadAttention's out_proj."""
    if isinstance(m, nn.MultiheadAttention) and part == "v":
        return [(m.out_proj.weight, (slice(None), c), -1)]
    return []


def input_channel_dim(m: nn.Module) -> int:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, LayerNorm2d)):
        return 1
    if isinstance(m, LayerScale):
        return m.dim
    return -1


def input_slices(m: nn.Module, arg: int, j: int):
    """The parameter entries that read input channel ``j`` of argument ``arg`` (exponent ±1),
    or None when the module cannot absorb a scaled input channel (a norm, an embedding)."""
    if isinstance(m, nn.Linear):
        return [(m.weight, (slice(None), j), -1)]
    if isinstance(m, nn.Conv2d):
        per_in, per_out = m.in_channels // m.groups, m.out_channels // m.groups
        g = j // per_in
        return [(m.weight, (slice(g * per_out, (g + 1) * per_out), j % per_in), -1)]
    if isinstance(m, nn.ConvTranspose2d):
        return [(m.weight, (j,), -1)]
    if isinstance(m, nn.BatchNorm2d):
        return [(m.weight, (j,), -1), (m.running_mean, (j,), +1)]
    if isinstance(m, LayerScale):
        return [(m.gamma, (j,), -1)]
    if isinstance(m, nn.MultiheadAttention):
        E = m.embed_dim
        return [(m.in_proj_weight, (slice(arg * E, (arg + 1) * E), j), -1)]
    return None


class Probe:
    """Runs a model with pre-hooks on every table module and scales parameter slices."""

    def __init__(self, model: nn.Module, x):
        self.model, self.x = model, x
        norms = (nn.LayerNorm, nn.RMSNorm)  # consumers that cannot absorb a scaled channel
        self.modules = {name: m for name, m in model.named_modules()
                        if _channels(m) or input_slices(m, 0, 0) is not None or isinstance(m, norms)}
        self.saved = {k: v.clone() for k, v in model.state_dict().items()}
        self.base_out, self.base_in = self.run()

    def run(self):
        record = []

        def hook(name):
            def fn(mod, args):
                for k, a in enumerate(args[:3]):
                    if isinstance(a, torch.Tensor) and a.is_floating_point():
                        record.append((name, k, a.detach().clone()))
            return fn

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in self.modules.items()]
        try:
            with torch.no_grad():
                out = self.model(self.x)
        finally:
            for h in handles:
                h.remove()
        return out, record

    def restore(self):
        self.model.load_state_dict(self.saved)

    def scale(self, items, lam):
        with torch.no_grad():
            for t, idx, e in items:
                t[idx] *= lam ** e

    def symmetric(self, group, lam) -> tuple[bool, set]:
        """Scale ``group`` by ``lam``, compensate downstream; ``(function kept, failure keys)``."""
        try:
            for name, part, c in group:
                m = self.model.get_submodule(name)
                self.scale([(t, i, 1) for t, i in in_slices(m, part, c)] + internal_out(m, part, c), lam)
            done = set()
            for _ in range(200):
                out, rec = self.run()
                assert len(rec) == len(self.base_in)
                for (name, arg, t1), (_, _, t0) in zip(rec, self.base_in):
                    if torch.allclose(t1, t0, rtol=0, atol=RTOL * float(t0.abs().max())):
                        continue
                    m = self.modules[name]
                    dim = input_channel_dim(m)
                    a0, a1 = t0.movedim(dim, 0).flatten(1), t1.movedim(dim, 0).flatten(1)
                    tol = RTOL * float(t0.abs().max())
                    changed = ((a1 - a0).abs().amax(1) > tol).nonzero().flatten().tolist()
                    keys = {(name, arg, j) for j in changed}
                    prop = all(float((a1[j] - lam * a0[j]).abs().max()) <= lam * tol for j in changed)
                    if prop and keys <= done:
                        continue  # compensated already: the module's output is unchanged
                    slices = [input_slices(m, arg, j) for j in changed]
                    if not prop or any(s is None for s in slices) or keys & done:
                        return False, keys
                    self.scale([s for ss in slices for s in ss], lam)
                    done |= keys
                    break
                else:
                    err = float((out - self.base_out).abs().max())
                    return err <= RTOL * float(self.base_out.abs().max()), {("output",)}
            raise AssertionError("no fixed point")
        finally:
            self.restore()


def brute_force(model: nn.Module, x, extra_groups=()) -> tuple[set, set, set]:
    """``(symmetric, found alone, tested)``: sets of frozensets of ``(module, part, channel)``.

    ``found alone`` are the symmetric groups found from single channels and merging, before
    ``extra_groups`` (the adapter's tie groups) are tried."""
    probe = Probe(model, x)
    singles = [(name, part, c) for name, m in model.named_modules() for part, n in _channels(m) for c in range(n)]
    symmetric, keys_of, tested = set(), {}, set()

    def try_group(group):
        tested.add(group)
        for lam in LAMBDAS:
            ok, keys = probe.symmetric(group, lam)
            if not ok:
                return ok, keys
        symmetric.add(group)
        return ok, keys

    for s in singles:
        ok, keys = try_group(frozenset([s]))
        if not ok:
            keys_of[frozenset([s])] = keys
    while True:  # merge failing groups that fail at the same module input
        owner = {}
        parent = {g: g for g in keys_of}

        def find(g):
            while parent[g] != g:
                g = parent[g]
            return g

        for g, keys in keys_of.items():
            for k in keys - {("output",)}:
                if k in owner:
                    ra, rb = find(g), find(owner[k])
                    if ra != rb:
                        parent[ra] = rb
                else:
                    owner[k] = g
        comps = {}
        for g in keys_of:
            comps.setdefault(find(g), []).append(g)
        merged = [frozenset().union(*gs) for gs in comps.values() if len(gs) > 1]
        merged = [m for m in merged if m not in tested]
        if not merged:
            break
        for m in merged:
            members = [g for g in keys_of if g <= m]
            for g in members:
                del keys_of[g]
            ok, keys = try_group(m)
            if not ok:
                keys_of[m] = keys
    found = set(symmetric)
    for group in extra_groups:
        if group not in tested:
            try_group(group)
    return symmetric, found, tested


def adapter_groups(model: nn.Module, x) -> tuple[set, set]:
    """The adapter's free variables and its fixed tie groups, as sets of candidate channels."""
    network = bt.TorchNetwork.trace(model, x)
    unit_to_cand = {}
    params = {}
    for name, m in model.named_modules():
        for part, n in _channels(m):
            t, idx = in_slices(m, part, 0)[0]
            params[(id(t), part)] = name
    for lm in network.layers:
        if lm.weight is None or lm.kind == "bias":
            continue
        part = ""
        if lm.weight.index is not None:  # MultiheadAttention in_proj rows
            part = "qkv"[lm.weight.index[0].start // lm.out_units.size]
        elif lm.name.endswith(".out_proj") and (id(lm.weight.tensor), "out") in params:
            part = "out"
        name = params.get((id(lm.weight.tensor), part))
        if name is None:
            continue
        for c, u in enumerate(lm.out_units.tolist()):
            unit_to_cand[u] = (name, part, c)
    free = set()
    for units in network.groups():
        cands = [unit_to_cand.get(u) for u in units.tolist()]
        assert None not in cands, f"free units that are no channel: {[network.labels[u] for u in units]}"
        free.add(frozenset(cands))
    fixed = {}
    for u, root in enumerate(network.group_of.tolist()):
        if network.fixed[u] and u in unit_to_cand:
            fixed.setdefault(root, set()).add(unit_to_cand[u])
    return free, {frozenset(g) for g in fixed.values() if len(g) > 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and steady on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_free_units_are_exactly_the_symmetries(name):
    torch.manual_seed(0)
    model, x = ZOO[name]()
    x = x.double() if x.is_floating_point() else x
    randomize_(model.double(), seed=1, x=x)
    free, fixed_groups = adapter_groups(model, x)
    symmetric, found, tested = brute_force(model, x, extra_groups=free | fixed_groups)
    missed = symmetric - free
    false = free - symmetric
    assert not missed, f"{name}: symmetries the adapter keeps fixed: {sorted(map(sorted, missed))[:5]}"
    assert not false, f"{name}: free units that are no symmetry: {sorted(map(sorted, false))[:5]}"
    assert found == symmetric  # every tie group was found without the adapter's help
    assert fixed_groups <= tested - symmetric  # and its fixed tie groups are no symmetry
    assert len(free) > 0
