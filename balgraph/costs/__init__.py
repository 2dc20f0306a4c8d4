"""Cost models: the convex cost ``R`` of a problem, behind one protocol (:mod:`.base`).

=================  ==================================================  ===================
model              takes                                               array module
=================  ==================================================  ===================
``layered``        layer matrices, ``b Σ|w|^p``, no ties               NumPy, CuPy or Dask
``sparse``         any graph, ``Σ b_e |w_e|^p``                        NumPy or CuPy
``log-domain``     any graph and sum of powers, any range of weights   NumPy
``shared``         shared weights (Section 8.3), on ``u = N z``        NumPy
=================  ==================================================  ===================

:func:`build_model` picks the first that applies; a model that meets costs beyond its float64
mat-vecs raises :class:`~balgraph.errors.RangeExceeded` and names its :meth:`fallback`.
"""

from __future__ import annotations

from ..errors import OptionError, RangeExceeded
from ..model import Problem
from ..regularizers import Regularizer
from .base import CostModel, Hessian, Point, Sweeper, gap_of
from .layered import LayeredCosts, plan_layers
from .logdomain import LogDomainCosts
from .shared import SharedCosts
from .sparse import SparseCosts

__all__ = ["CostModel", "Hessian", "LayeredCosts", "LogDomainCosts", "Point", "SharedCosts", "SparseCosts",
           "Sweeper", "build_model", "gap_of", "plan_layers"]

MODELS = {"layered": LayeredCosts, "sparse": SparseCosts, "log-domain": LogDomainCosts}


def build_model(problem: Problem, reg: Regularizer, *, device: str | None = None, storage=None,
                kind: str | None = None, notes: list | None = None, **kwargs) -> CostModel:
    """The cost model of ``problem``: the first of layered, sparse, log-domain that applies.

    ``device`` None runs where the layer matrices live; ``kind`` insists on one model (an
    :class:`OptionError` says why it does not apply). ``notes`` collects why models were skipped.
    """
    notes = [] if notes is None else notes
    if device is None and problem.xp.__name__ == "cupy":
        device = "cuda"
    if problem.share is not None:
        model = SharedCosts.build(problem, reg, device=device, **kwargs)
        if isinstance(model, str):
            raise OptionError(model)
        return model
    # Dask blocks stay where their chunks live: the per-edge models would gather them (only on request)
    chain = [kind] if kind is not None else ["layered"] if problem.lazy else ["layered", "sparse", "log-domain"]
    for name in chain:
        try:
            if name == "layered":
                model = LayeredCosts.build(problem, reg, device=device, storage=storage)
            else:
                model = MODELS[name].build(problem, reg, device=device)
        except RangeExceeded as exc:
            model = f"{exc}"
        if not isinstance(model, str):
            return model
        notes.append(f"{name}: {model}")
        if kind is not None:
            raise OptionError(f"the {name} cost model cannot take this problem: {model}")
    if problem.lazy:
        raise OptionError("the layer matrices are Dask arrays, which only the layered model keeps where their"
                          f" chunks live: {'; '.join(notes)}. model='sparse' or 'log-domain' gathers the weights"
                          " on this machine")
    raise OptionError(f"no cost model runs this problem on device {device!r}: " + "; ".join(notes)
                      + " (pass device=None or 'cpu')")
