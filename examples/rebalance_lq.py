"""Rebalance a network trained under L_p towards L_q, without retraining (Discussion 11.2 (4)).

A network trained with an L_p weight decay ends (near) L_p-balanced: every hidden unit has
Σ_IN |w|^p = Σ_OUT |w|^p (eq. 5.8). The same function can be re-expressed in its unique
L_q-balanced form by one more solve: the rescaling changes no output, lowers the L_q cost to its
minimum over all rescalings (Theorem 9.1), and in general breaks the L_p balance. Run::

    python examples/rebalance_lq.py
"""

from __future__ import annotations

import numpy as np

import balgraph


def rebalance(graph, p: float = 2.0, q: float = 1.0, seed: int = 0) -> dict:
    """Balance ``graph`` for L_p, then re-balance the result for L_q; return what changed."""
    lp = balgraph.solve(graph, p=p, tol=1e-12)
    trained = lp.to_graph()  # stands in for a network trained with L_p decay
    lq = balgraph.solve(trained, p=q, tol=1e-12)
    x = np.random.default_rng(seed).standard_normal((64, sum(r == "input" for r in lp.problem.roles)))
    pb = lq.problem  # the L_p-balanced network, compiled

    def lp_imbalance(weights: np.ndarray) -> float:
        r = balgraph.imbalance(pb.with_weights(weights), balgraph.Lp(p), np.zeros(pb.n_vars))
        return float(np.max(np.abs(r), initial=0.0))

    return {
        "output_change": float(np.max(np.abs(balgraph.forward(lq.to_graph(), x) - balgraph.forward(trained, x)))),
        "lq_cost_before": lq.cost_before,
        "lq_cost_after": lq.cost_after,
        "lq_imbalance_after": lq.max_imbalance,
        "lp_imbalance_before": lp_imbalance(pb.weight),
        "lp_imbalance_after": lp_imbalance(lq.weight_array),
    }


def main() -> None:
    graph = balgraph.gallery.random_network(0, kind="layered", n_hidden=12)
    for key, value in rebalance(graph).items():
        print(f"{key:>22}: {value:.3g}")


if __name__ == "__main__":
    main()
