"""Write a rescaling into a model: all checked first, then written, or nothing is written.

Every tensor ``t`` (a parameter, a BatchNorm ``running_mean``, an optimizer state tensor) becomes
``t * mul / div`` with small broadcast factor arrays. Before anything changes, each new value is
computed exactly as it will be written, a row chunk at a time (no full-size temporaries), and
checked: finite, within the tensor's dtype, and non-zero wherever the old value was non-zero
(underflow would change the network function). Any failure raises
:class:`~balgraph.NetworkError` naming the tensor, and the model is left untouched.

Examples
--------
>>> import numpy as np, torch
>>> from balgraph.torch._values import ParamRef
>>> w = torch.ones(2, 3)
>>> apply_checked([(ParamRef("w", w), np.array([[2.0], [4.0]]), None)])
>>> w[:, 0].tolist()
[2.0, 4.0]
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import NetworkError

__all__ = ["apply_checked", "optimizer_writes", "STATE_EXPONENTS"]

CHUNK = 1 << 20

# Exponent e of F in the rescaled state ``state · F**e``, per optimizer and state key.
STATE_EXPONENTS = {
    "SGD": {"momentum_buffer": -1},
    "Adam": {"exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2},
    "AdamW": {"exp_avg": -1, "exp_avg_sq": -2, "max_exp_avg_sq": -2},
    "NAdam": {"exp_avg": -1, "exp_avg_sq": -2},
    "RAdam": {"exp_avg": -1, "exp_avg_sq": -2},
    "Adamax": {"exp_avg": -1, "exp_inf": -1},
    "Adagrad": {"sum": -2},
    # RMSprop's momentum accumulates g / sqrt(v), which does not change under rescaling.
    "RMSprop": {"square_avg": -2, "grad_avg": -1, "momentum_buffer": 0},
}


def optimizer_writes(optimizer, factors: list) -> list:
    """``(name, tensor, mul, div)`` for each optimizer state tensor; raise on unknown state."""
    if optimizer is None:
        return []
    table = STATE_EXPONENTS.get(type(optimizer).__name__)
    out = []
    for ref, mul, div in factors:
        state = optimizer.state.get(ref.tensor, {})
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or value.shape != ref.tensor.shape:
                continue
            if table is None or key not in table:
                raise NetworkError(
                    f"balance_ does not know how {type(optimizer).__name__} state {key!r} transforms"
                    " under rescaling: pass optimizer=None and reset that optimizer's state, or use"
                    f" one of {', '.join(sorted(STATE_EXPONENTS))}"
                )
            e = table[key]
            if e:
                view = value if ref.index is None else value[ref.index]
                out.append((f"{type(optimizer).__name__} state {key!r} of {ref.name!r}", view,
                            None if mul is None else np.asarray(mul, np.float64) ** e,
                            None if div is None else np.asarray(div, np.float64) ** e))
    return out


def _torch(f, t: torch.Tensor):
    return None if f is None else torch.as_tensor(np.ascontiguousarray(f), dtype=t.dtype, device=t.device)


def _chunks(t: torch.Tensor, mul, div):
    """``(rows, old, new)`` per row chunk of ``t``: ``new = old * mul / div`` as written."""
    if t.ndim == 0:
        yield slice(None), t, _new(t, mul, div)
        return
    step = max(1, CHUNK // max(1, t[0].numel() if t.shape[0] else 1))
    for r in range(0, t.shape[0], step):
        rows = slice(r, r + step)
        yield rows, t[rows], _new(t[rows], _rows(mul, rows), _rows(div, rows))


def _rows(f, rows):
    return f if f is None or f.ndim == 0 or f.shape[0] == 1 else f[rows]


def _new(old, mul, div):
    new = old * mul if mul is not None else old.clone()
    return new / div if div is not None else new


def _within_bounds(t: torch.Tensor, mul, div) -> bool:
    """A cheap sufficient test: ``max|t|`` and the smallest non-zero ``|t|`` times the factors'
    extremes stay inside the dtype's normal range (then no entry can overflow or vanish)."""
    fi = torch.finfo(t.dtype)
    lo_m, hi_m = (1.0, 1.0) if mul is None else (float(mul.min()), float(mul.max()))
    lo_d, hi_d = (1.0, 1.0) if div is None else (float(div.min()), float(div.max()))
    top = float(torch.linalg.vector_norm(t.detach(), float("inf"))) if t.numel() else 0.0
    if not np.isfinite(top) or top * max(hi_m, hi_m / lo_d) > 0.5 * fi.max:
        return False
    if lo_m >= 1.0 and lo_m / hi_d >= 1.0:
        return True
    low = float("inf")
    for _, old in _row_chunks(t):
        a = old.abs()
        low = min(low, float(a.masked_fill_(a == 0, float("inf")).amin())) if a.numel() else low
    return low == float("inf") or low * min(lo_m, lo_m / hi_d) >= 2.0 * fi.tiny


def _row_chunks(t: torch.Tensor):
    if t.ndim == 0:
        yield slice(None), t.reshape(1)
        return
    step = max(1, CHUNK // max(1, t[0].numel() if t.shape[0] else 1))
    for r in range(0, t.shape[0], step):
        yield slice(r, r + step), t[r:r + step]


def _check(name: str, t: torch.Tensor, mul, div) -> None:
    if _within_bounds(t, mul, div):
        return
    for _, old, new in _chunks(t, mul, div):
        if not bool(torch.isfinite(new).all()):
            raise NetworkError(
                f"balancing would write non-finite values into {name} (dtype {t.dtype}): the"
                " scales leave the dtype's range; nothing was changed. Balance in float64"
                " (model.double()), or check the model for extreme weights"
            )
        if bool(((old != 0) & (new == 0)).any()):
            raise NetworkError(
                f"balancing would turn non-zero entries of {name} (dtype {t.dtype}) into 0 (they"
                " underflow), which changes the network function; nothing was changed. Balance"
                " in float64 (model.double()), or check the model for extreme weights"
            )


def apply_checked(factors: list, optimizer=None) -> None:
    """Rescale every ``(ref, mul, div)`` (and the optimizer's state), all checked first."""
    writes = []
    for ref, mul, div in factors:
        for f in (mul, div):
            if f is not None and not (np.all(np.isfinite(f)) and np.all(np.asarray(f) > 0)):
                raise NetworkError(
                    f"the scales for {ref.name!r} are not finite positive numbers (the solve left"
                    " float64's range, e.g. for a tiny p); nothing was changed. Use a moderate p"
                )
        writes.append((repr(ref.name), ref.view(), mul, div))
    writes += optimizer_writes(optimizer, factors)
    with torch.no_grad():
        staged = [(name, t, _torch(mul, t), _torch(div, t)) for name, t, mul, div in writes]
        for name, t, mul, div in staged:
            _check(name, t, mul, div)
        for _, t, mul, div in staged:  # in place: the same roundings as the check's (t * mul) / div
            if mul is not None:
                t.mul_(mul)
            if div is not None:
                t.div_(div)
