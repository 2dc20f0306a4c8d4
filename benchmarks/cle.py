"""Cross-layer equalization: what the peers leave unbalanced, and how long each takes.

    python benchmarks/cle.py            # -> benchmarks/results/cle.md

Linear/ReLU chains (float64, channels scaled over e^±2, biases) are equalized by

- AIMET's formula, one pass over the consecutive pairs (``s = sqrt(r1/r2)``, absmax);
- Brevitas' loop: the same pass repeated, at most 10 times, until ``max |s − 1| < 0.05``;
- torch.ao's ``equalize`` (minmax), at its default threshold 1e-4 and at 1e-12;
- ``balgraph.torch.balance_(model, inf, x, range=...)`` (tol 1e-12), tracing included;

and the largest relative gap ``|r_in − r_out| / (r_in + r_out)`` left over all hidden channels is
computed by PyTorch arithmetic on the resulting weights. Times are wall-clock, one run each,
side by side.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import balgraph.torch as bt  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "cle.md"


def chain(depth: int, width: int, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    sizes = [width] * (depth + 1) + [10]
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        lin = nn.Linear(a, b).double()
        with torch.no_grad():
            lin.weight.normal_(generator=g).mul_(torch.exp(4 * torch.rand(b, 1, generator=g, dtype=torch.float64) - 2))
            lin.bias.normal_(generator=g)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def size(w, kind, axis):
    dims = tuple(d for d in range(w.ndim) if d != axis)
    return w.abs().amax(dim=dims) if kind == "absmax" else w.amax(dim=dims) - w.amin(dim=dims)


def linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def gap(model, kind) -> float:
    ls = linears(model)
    with torch.no_grad():
        return max(float(((size(a.weight, kind, 0) - size(b.weight, kind, 1)).abs()
                          / (size(a.weight, kind, 0) + size(b.weight, kind, 1))).max()) for a, b in zip(ls, ls[1:]))


def pair_pass(model, kind="absmax") -> float:
    """One pass of CLE's pair formula; the largest |s − 1|."""
    ls, moved = linears(model), 0.0
    with torch.no_grad():
        for a, b in zip(ls, ls[1:]):
            s = torch.sqrt(size(a.weight, kind, 0) / size(b.weight, kind, 1))
            a.weight.div_(s[:, None])
            a.bias.div_(s)
            b.weight.mul_(s[None, :])
            moved = max(moved, float((s - 1).abs().max()))
    return moved


def aimet(model):
    pair_pass(model)
    return model


def brevitas(model):
    for _ in range(10):
        if pair_pass(model) < 0.05:
            break
    return model


def torch_ao(threshold):
    def run(model):
        from torch.ao.quantization._equalize import equalize

        names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
        return equalize(model, [[a, b] for a, b in zip(names, names[1:])], threshold=threshold, inplace=True)
    return run


def ours(kind):
    def run(model):
        x = torch.zeros(1, linears(model)[0].in_features, dtype=torch.float64)
        res = bt.balance_(model, float("inf"), x, range=kind, tol=1e-12)
        assert res.converged
        return model
    return run


METHODS = [
    ("AIMET one pass (absmax)", aimet, "absmax"),
    ("Brevitas loop (absmax, ≤ 10 passes, 0.05)", brevitas, "absmax"),
    ("balgraph absmax", ours("absmax"), "absmax"),
    ("torch.ao equalize, threshold 1e-4 (minmax)", torch_ao(1e-4), "minmax"),
    ("torch.ao equalize, threshold 1e-12 (minmax)", torch_ao(1e-12), "minmax"),
    ("balgraph minmax", ours("minmax"), "minmax"),
]


def main() -> None:
    torch.set_num_threads(1)
    lines = ["# Cross-layer equalization against the peers\n",
             "Produced by `python benchmarks/cle.py` (CPU, one thread; see its docstring). Gap: the largest"
             " relative difference between a hidden channel's size into and out of it, in the method's"
             " convention, by PyTorch arithmetic.\n"]
    for depth, width in ((3, 64), (8, 64), (8, 1024)):
        base = chain(depth, width)
        n = sum(m.weight.numel() for m in linears(base))
        lines += [f"\n## Linear chain, {depth} hidden layers of {width} ({n / 1e6:.2f} M weights)\n",
                  "| method | gap left | time (s) |", "|---|---:|---:|"]
        for name, fn, kind in METHODS:
            model = copy.deepcopy(base)
            t = time.perf_counter()
            fn(model)
            dt = time.perf_counter() - t
            lines.append(f"| {name} | {gap(model, kind):.1e} | {dt:.3f} |")
            print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
