"""One summary of a traced model: how many channel units are free, and what fixed the others.

``M`` counts every channel of every parametrized op that is not a model output (a Linear's
neurons, a Conv's or BatchNorm's channels, a norm's affine channels, attention value channels,
query and key channels, layer-scale channels). ``N`` counts those a solve balances: free by
structure and not dead ends at the current weights. The rest are counted by reason.

Examples
--------
>>> r = UnitReport(n_units=10, n_free=4, fixed_by={"GELU": 4, "dead ends": 2})
>>> str(r)
'4 of 10 units free; fixed by GELU ×4, dead ends ×2'
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import name_some

__all__ = ["UnitReport", "announce"]

logger = logging.getLogger("balgraph.torch")

DEAD = "dead ends"


@dataclass
class UnitReport:
    """``N of M units free; fixed by ...`` (module docstring), with the details.

    Attributes
    ----------
    n_units, n_free : int
        ``M`` and ``N``.
    fixed_by : dict
        Reason -> number of channel units it fixed (most frequent first); ``"dead ends"``
        counts units with no finite balanced scale at the current weights.
    unsupported : dict
        Ops balgraph does not know -> number of times met (their inputs keep scale 1).
    train_bn : list of str
        BatchNorm layers found in training mode.
    dead : list of str
        Labels of the dead-end units.
    """

    n_units: int
    n_free: int
    fixed_by: dict = field(default_factory=dict)
    unsupported: dict = field(default_factory=dict)
    train_bn: list = field(default_factory=list)
    dead: list = field(default_factory=list)

    @property
    def dead_ends(self) -> int:
        return self.fixed_by.get(DEAD, 0)

    @classmethod
    def build(cls, network, dead: np.ndarray) -> UnitReport:
        channel = network.channel
        counts = Counter(network.reason[k] for k in np.flatnonzero(channel & network.fixed).tolist())
        n_dead = int((channel & dead).sum())
        if n_dead:
            counts[DEAD] = n_dead
        free = int((channel & ~network.fixed & ~dead).sum())
        dead_labels = [network.labels[k] for k in np.flatnonzero(dead).tolist()]
        return cls(int(channel.sum()), free, dict(counts.most_common()), dict(network.unsupported),
                   list(network.train_bn), dead_labels)

    def __str__(self) -> str:
        line = f"{self.n_free} of {self.n_units} units free"
        if self.fixed_by:
            line += "; fixed by " + ", ".join(f"{k} ×{v}" for k, v in self.fixed_by.items())
        return line

    @property
    def needs_attention(self) -> bool:
        """Whether the summary is a warning (unknown ops, train-mode BatchNorm, dead ends)."""
        return bool(self.unsupported or self.train_bn or self.dead_ends)

    def message(self) -> str:
        """The summary line and, when something needs attention, what to do about it."""
        parts = [f"balgraph.torch: {self}"]
        if self.unsupported:
            ops = ", ".join(f"{k} ×{v}" for k, v in self.unsupported.items())
            parts.append(f"unsupported ops (their inputs keep scale 1): {ops}; replace them by"
                         " ReLU/linear ops, or ignore this if they are not positively homogeneous")
        if self.train_bn:
            parts.append(f"BatchNorm in training mode: {name_some(self.train_bn, 5)} normalize"
                         " by batch statistics, so the channels feeding them keep scale 1; call"
                         " model.eval() before balancing to balance them")
        if self.dead_ends:
            parts.append(f"{self.dead_ends} dead-end unit(s) {name_some(self.dead, 3)} have all"
                         " their incoming or outgoing weights at zero (e.g. a zero-initialised"
                         " BatchNorm): no finite balanced scale, they keep scale 1")
        return ". ".join(parts)


def announce(report: UnitReport, category: type[Warning], stacklevel: int = 3) -> None:
    """One line per call: a warning when something needs attention, else an INFO log record."""
    if report.needs_attention:
        warnings.warn(report.message(), category, stacklevel=stacklevel)
    else:
        logger.info(report.message())
