"""Per-unit data of a network, checked once: roles, fixed units, degrees, ties, activations.

A unit is *free* (scalable) when it is hidden and its activation is positively homogeneous;
visible units, bias units and non-homogeneous hidden units are *fixed* (scale 1, Remark 5.3).
Free units are grouped into *variables*: a tie group (Defs 3.3, 4.5; Section 8.2) is one
variable, an untied free unit its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..checks import check_labels, check_length, positive_number
from ..errors import NetworkError, name_some

__all__ = ["ROLES", "HOMOGENEOUS_ACTIVATIONS", "is_homogeneous", "UnitData", "unit_data"]

ROLES = ("input", "output", "hidden", "bias")

HOMOGENEOUS_ACTIVATIONS = frozenset({"relu", "leaky_relu", "linear", "identity", "bilu", "bipu"})


def is_homogeneous(activation) -> bool:
    """Whether an activation name makes a hidden unit free (callables and other names fix it)."""
    return activation is None or (isinstance(activation, str) and activation.lower() in HOMOGENEOUS_ACTIVATIONS)


class UnitData:
    """Checked per-unit arrays: ``roles``, ``fixed``, ``degree``, ``var`` (read-only)."""

    def __init__(self, roles, fixed, degree, var):
        for a in (fixed, degree, var):
            a.setflags(write=False)
        self.roles, self.fixed, self.degree, self.var = roles, fixed, degree, var


def unit_data(nodes: Sequence, roles=None, fixed=None, degree=None, tie=None, *, indeg=None,
              outdeg=None, activation=None) -> UnitData:
    """Check the per-unit inputs of a network with ``len(nodes)`` units and number its variables.

    ``roles`` default: in-degree 0 -> ``"input"``, out-degree 0 -> ``"output"``, else
    ``"hidden"`` (``indeg``/``outdeg`` give the degrees). ``fixed`` marks hidden units kept at
    scale 1; ``activation`` names (non-homogeneous ones fix their unit) add to it. ``degree`` is
    the BiPU degree ``c > 0``; ``tie`` a hashable label per unit (``None`` for untied).
    """
    n = len(nodes)
    if roles is None:
        roles = tuple(np.where(indeg == 0, "input", np.where(outdeg == 0, "output", "hidden")).tolist())
    roles = tuple(check_length(list(roles), n, "roles"))
    bad = [nodes[k] for k, r in enumerate(roles) if not (isinstance(r, str) and r in ROLES)]
    if bad:
        raise NetworkError(f"unknown role for unit(s) {name_some(bad)}: use one of {', '.join(ROLES)}")
    is_fixed = np.array([r != "hidden" for r in roles], dtype=bool)
    if fixed is not None:
        f = np.asarray(check_length(fixed, n, "fixed"))
        if f.dtype.kind != "b":
            raise NetworkError(f"fixed must be booleans (one per unit), got dtype {f.dtype}")
        is_fixed |= f.ravel()
    if activation is not None:
        check_length(activation, n, "activation")
        is_fixed |= np.array([not is_homogeneous(a) for a in activation], dtype=bool)
    deg = np.ones(n) if degree is None else checked_degrees(degree, nodes)
    deg = np.where(is_fixed, 1.0, deg)
    if tie is not None:
        tie = check_labels(check_length(list(tie), n, "tie"), "tie labels", nodes)
        visible = [nodes[k] for k in range(n) if tie[k] is not None and roles[k] != "hidden"]
        if visible:
            raise NetworkError(f"visible unit(s) {name_some(visible)} carry a 'tie': only hidden units can be tied")
    var = assign_variables(nodes, is_fixed, deg, tie)
    return UnitData(roles, is_fixed, deg, var)


def checked_degrees(degree, nodes: Sequence) -> np.ndarray:
    """One BiPU degree ``c > 0`` per unit as float64, else :class:`NetworkError` naming the units."""
    try:
        deg = np.asarray(degree, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        values = list(degree) if not isinstance(degree, str) else [degree]
        for k, d in enumerate(values):
            positive_number(d, f"the BiPU degree of unit {nodes[min(k, len(nodes) - 1)]!r}", NetworkError)
        raise NetworkError("degree must hold numbers > 0, one per unit") from None
    check_length(deg, len(nodes), "degree")
    bad = np.flatnonzero(~(np.isfinite(deg) & (deg > 0)))
    if bad.size:
        raise NetworkError(f"the BiPU degree of unit(s) {name_some([nodes[k] for k in bad])} must be a"
                           f" finite number > 0, got {deg[bad[0]]!r}")
    return deg


def assign_variables(nodes, fixed, degree, tie) -> np.ndarray:
    """Number the free units' variables: one per tie group, one per untied free unit."""
    n = len(nodes)
    var = np.full(n, -1, dtype=np.int64)
    free = np.flatnonzero(~fixed)
    if tie is None or all(t is None for t in tie):
        var[free] = np.arange(free.size)
        return var
    groups: dict = {}
    for k in range(n):
        if tie[k] is not None:
            groups.setdefault(tie[k], []).append(k)
    for label, members in groups.items():
        if len({bool(fixed[k]) for k in members}) > 1:
            fixed_members = [nodes[k] for k in members if fixed[k]]
            raise NetworkError(
                f"tie group {label!r} mixes free units with fixed unit(s) {name_some(fixed_members)};"
                " tie only hidden units with a homogeneous activation"
            )
        degrees = {float(degree[k]) for k in members}
        if len(degrees) > 1:
            raise NetworkError(
                f"tie group {label!r} mixes degrees {sorted(degrees)} (units"
                f" {name_some([nodes[k] for k in members])}); tied units must share one degree"
            )
    next_var, seen = 0, {}
    for k in free.tolist():
        label = tie[k]
        if label is None:
            var[k] = next_var
            next_var += 1
        elif label in seen:
            var[k] = seen[label]
        else:
            seen[label] = var[k] = next_var
            next_var += 1
    return var
