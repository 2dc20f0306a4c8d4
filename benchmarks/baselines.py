"""External baselines, written here independently of balgraph's code.

``layer_parallel``: plain NumPy layer-parallel exact balancing of an MLP, the way the paper's
notebooks balance (Section 8.2: every hidden layer balanced exactly in turn, eq. 5.6), written
as a careful user would: ``|W|^p`` once per layer, per-layer scaling vectors, one mat-vec per
side, a convergence check over all units after every sweep. It is the reference that
``balgraph.solve`` is measured against end to end (Problem construction, checks and the
independent report included).
"""

from __future__ import annotations

import numpy as np

__all__ = ["layer_parallel"]


def layer_parallel(mats, biases, p: float = 2.0, tol: float = 1e-10, max_sweeps: int = 1_000_000):
    """Balance ``x_k = relu(W_k x_{k-1} + b_k)`` by exact layer sweeps until every hidden unit's
    relative imbalance ``|in − out|/(in + out)`` is ``<= tol``.

    Returns ``(scales, sweeps, max_imbalance)`` with ``scales[k]`` the ``Λ`` of hidden layer ``k+1``.
    Works in ``x = p log Λ``; every exponential is shifted by its maximum, so it is exact for
    weights within float64 (the workloads W1–W6).
    """
    L = len(mats)
    A = [np.abs(W) ** p for W in mats]
    B = [np.zeros(W.shape[0]) if b is None else np.abs(b) ** p for W, b in zip(mats, biases)]
    x = [np.zeros(W.shape[0]) for W in mats[:-1]]

    def sides(k):
        """log in and log out of hidden layer k+1 (its own factor e^{x} left out of in)."""
        if k == 0:
            cin = A[0].sum(axis=1)
        else:
            s = -x[k - 1]
            cin = A[k] @ np.exp(s - s.max()) * np.exp(s.max())
        cin = cin + B[k]
        nxt = x[k + 1] if k + 1 < L - 1 else np.zeros(A[k + 1].shape[0])
        cout = np.exp(nxt - nxt.max()) @ A[k + 1] * np.exp(nxt.max())
        return np.log(cin), np.log(cout)

    worst, sweeps = np.inf, 0
    while sweeps < max_sweeps:
        for k in range(L - 1):
            lin, lout = sides(k)
            x[k] = 0.5 * (lout - lin)  # in·e^{x} = out·e^{-x}: eq. 5.6 in x = p log Λ
        sweeps += 1
        worst = 0.0
        for k in range(L - 1):
            lin, lout = sides(k)
            worst = max(worst, float(np.max(np.abs(np.tanh(0.5 * (lin + x[k] - (lout - x[k])))))))
        if worst <= tol:
            break
    return [np.exp(v / p) for v in x], sweeps, worst
