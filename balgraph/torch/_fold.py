"""BatchNorm folding before cross-layer equalization (Nagel et al. 2019, "data-free quantization").

CLE rescales the channels between two weight layers; a BatchNorm in between is folded into the
layer before it first (``W ← W γ/σ``, ``b ← (b − μ) γ/σ + β``), so that the pair is adjacent.
balgraph does not write its own fold: it calls PyTorch's, ``torch.fx.experimental.optimization.fuse``
(``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` on every Conv→BatchNorm and Linear→BatchNorm1d
pair whose output has no other user). Bias absorption and bias correction, DFQ's other steps,
need activation statistics and are out of scope.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import NetworkError

__all__ = ["fold_batchnorm"]

_BATCHNORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def fold_batchnorm(model: torch.nn.Module) -> torch.fx.GraphModule:
    """A copy of ``model`` with every BatchNorm that follows a Conv or Linear folded into it.

    Uses ``torch.fx.experimental.optimization.fuse`` (PyTorch's own fold); the model must be
    in eval mode (the running statistics are what is folded) and traceable by ``torch.fx``.
    The copy computes the same function up to rounding; BatchNorms after anything else stay.

    Examples
    --------
    >>> import torch, balgraph.torch as bt
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    >>> folded = bt.fold_batchnorm(net)
    >>> sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    0
    >>> x = torch.randn(2, 1, 5, 5)
    >>> bool(torch.allclose(folded(x), net(x), atol=1e-6))
    True
    """
    with warnings.catch_warnings():  # the module's MKL-DNN helpers use deprecated torch.jit decorators
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.fx.experimental.optimization import fuse

    training = [name for name, m in model.named_modules() if isinstance(m, _BATCHNORM) and m.training]
    if training:
        raise NetworkError(f"BatchNorm {training[0]!r} is in training mode: folding uses the running statistics;"
                           " call model.eval() first")
    return fuse(model)
