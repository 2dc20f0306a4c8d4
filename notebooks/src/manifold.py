# %% [markdown]
# # The linear manifold of self-consistent configurations (Proposition 9.4, Figure 6)
#
# The paper describes a balanced state by one variable per edge, L_ij = log(Λ_i/Λ_j) (Section 9),
# where Λ_i is the cumulative scale of unit i (Λ = 1 on inputs and outputs).
#
# **Proposition 9.4.** *A set L_ij is self-consistent (comes from scales Λ_i) if and only if
# Σ_π L_ij = 0 along every directed path π from an input unit to an output unit and along every
# directed cycle.*
#
# **Figure 6.** *Minimizing the strictly convex regularizer R(L) = Σ_ij e^{pL_ij}|w_ij|^p over the
# linear manifold of self-consistent configurations has a unique solution A; at A the weights are
# balanced. The manifold depends only on the architecture (Remark 9.5), R on the weights. Stochastic
# balancing produces random paths from the origin (L = 0) to A.*
#
# We take a network with two hidden units, so the manifold is a plane: L = G u with u = (log Λ_1,
# log Λ_2) the *potentials*. The (u_1, u_2) plane is therefore exactly the manifold, and R can be drawn
# on it as a contour plot.

# %%
import os

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import balgraph
import balgraph.local as bl
from balgraph.manifold import manifold

SMALL = os.environ.get("BALGRAPH_SMALL") == "1"
N_TRAJ = 4 if SMALL else 12
GRID = 121 if SMALL else 301

g = nx.DiGraph()
g.add_node("x", role="input")
g.add_node("y", role="output")
g.add_edge("x", "h1", weight=3.0)
g.add_edge("h1", "h2", weight=0.4)
g.add_edge("h2", "y", weight=-0.25)
g.add_edge("x", "h2", weight=-2.0)
g.add_edge("h1", "y", weight=0.3)
pb = balgraph.compile_network(g)
M = manifold(g)
print("edges (columns):", M.edges)
print("free units:", [pb.nodes[k] for k in range(pb.n_nodes) if not pb.fixed[k]])
print("G (L = G u):\n", pb.G.toarray())
print("C (self-consistent iff C L = 0):\n", M.constraints.toarray())

# %% [markdown]
# ## The constraints are the paper's path constraints
#
# `balgraph.manifold` builds C from a spanning tree of the graph with inputs and outputs merged into
# one ground node (Remark 9.6): each non-tree edge closes one cycle. Independently, we enumerate every
# input → output path with networkx and form the path matrix Π (one row per path, 1 on its edges).
# Proposition 9.4 says {L : Π L = 0} = {L : C L = 0} = range(G): we check C G = 0, Π G = 0, and that
# all three have dimension m − n_vars = 5 − 2 = 3 constraints.

# %%
edge_index = {e: k for k, e in enumerate(M.edges)}
paths = list(nx.all_simple_paths(g, "x", "y"))
Pi = np.zeros((len(paths), pb.n_edges))
for r, path in enumerate(paths):
    for a, b in zip(path, path[1:]):
        Pi[r, edge_index[(a, b)]] = 1.0
Gd, Cd = pb.G.toarray(), M.constraints.toarray()
ranks = {"G": np.linalg.matrix_rank(Gd), "C": np.linalg.matrix_rank(Cd), "paths": np.linalg.matrix_rank(Pi)}
print("paths:", [" -> ".join(p) for p in paths])
print("ranks:", ranks, "| max |C G| =", np.abs(Cd @ Gd).max(), "| max |Π G| =", np.abs(Pi @ Gd).max())
# the row spaces of C and Π coincide iff stacking them adds no rank
print("rank [C; Π] =", np.linalg.matrix_rank(np.vstack([Cd, Pi])))

# %% [markdown]
# ## The objective on the manifold, the balance curves, and stochastic balancing
#
# On the plane, R(u) = Σ_e |w_e|^p exp(p (G u)_e). Its partial derivative in u_i is p (IN_i − OUT_i):
# it vanishes exactly where unit i is balanced (eq. 5.8). So each unit has a *balance curve*, and
# balancing unit i moves the point parallel to the u_i axis onto that curve (the exact minimizer
# along that coordinate, Theorem 5.6). The curves cross once: at the optimum A. The contours and
# curves below are computed directly with numpy, independently of the library; A comes from
# `balgraph.solve` (Newton) and the trajectories from the library's local operation
# `balgraph.local.optimal_scale` (eq. 5.6), applied to a random unit at each step.

# %%
a = np.abs(pb.weight)
free_labels = ["h1", "h2"]
var_of = {lab: int(pb.var[pb.node_index[lab]]) for lab in free_labels}


def trajectory(p, seed, steps=60, order=None):
    """Stochastic balancing (Section 8.1) by local operations, recording u after each step."""
    rng = np.random.default_rng(seed)
    w, u = pb.weight.copy(), np.zeros(pb.n_vars)
    pts, costs = [u.copy()], [bl.lp_cost(w, p)]
    for k in range(steps):
        lab = free_labels[order[k % 2]] if order else free_labels[rng.integers(2)]
        opt = bl.optimal_scale(pb, w, lab, p)
        w = bl.scale_weights(pb, w, lab, opt.scale)
        u[var_of[lab]] += opt.log_scale
        pts.append(u.copy())
        costs.append(bl.lp_cost(w, p))
    return np.array(pts), np.array(costs), w


results = {}
fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
for ax, p in zip(axes, (2.0, 1.0)):
    ref = balgraph.solve(pb, p=p, tol=1e-13)
    A = ref.potentials
    lo, hi = A.min() - 2.0, A.max() + 2.0
    lo, hi = min(lo, -0.5), max(hi, 0.5)
    s = np.linspace(lo, hi, GRID)
    U1, U2 = np.meshgrid(s, s)
    U = np.stack([U1.ravel(), U2.ravel()], axis=1)
    terms = a ** p * np.exp(p * (U @ Gd.T))          # per grid point, per edge
    R = terms.sum(1).reshape(U1.shape)
    grad = (p * terms @ Gd).reshape(*U1.shape, 2)    # ∂R/∂u = p Gᵀ(a e^{pGu})
    ax.contour(U1, U2, np.log(R), levels=30, cmap="viridis", linewidths=0.8)
    ax.contour(U1, U2, grad[..., 0], levels=[0], colors="C3", linewidths=2)
    ax.contour(U1, U2, grad[..., 1], levels=[0], colors="C1", linewidths=2)
    ax.plot([], [], color="C3", lw=2, label="h1 balanced (IN = OUT)")
    ax.plot([], [], color="C1", lw=2, label="h2 balanced")
    trajs = [trajectory(p, seed) for seed in range(N_TRAJ)]
    for pts, _, _ in trajs:
        ax.plot(pts[:, 0], pts[:, 1], "-", color="k", alpha=0.35, lw=1, drawstyle="default")
    ax.plot(trajs[0][0][:, 0], trajs[0][0][:, 1], "o-", color="k", ms=3, lw=1.2, label="stochastic balancing")
    ax.plot(0, 0, "s", color="k", ms=8, label="origin (L = 0)")
    ax.plot(*A, "*", color="red", ms=16, label="A (Newton)")
    k = np.argmin(R)
    ax.plot(U[k, 0], U[k, 1], "x", color="blue", ms=10, label="grid minimum of R")
    ax.set_xlabel("u1 = log Λ_h1")
    ax.set_ylabel("u2 = log Λ_h2")
    ax.set_title(f"p = {p}: log R on the manifold")
    ax.legend(fontsize=8, loc="lower left")
    hess = p * p * (Gd.T * (a ** p * np.exp(p * Gd @ A))) @ Gd
    results[p] = dict(A=A, ref=ref, trajs=trajs, grid_min=U[k], step=s[1] - s[0],
                      hess_eigs=np.linalg.eigvalsh(hess))
plt.tight_layout()
plt.show()
for p, r in results.items():
    print(f"p = {p}: A = {np.round(r['A'], 6)}, cost {r['ref'].cost_before:.5g} -> {r['ref'].cost_after:.5g},"
          f" Hessian eigenvalues at A {np.round(r['hess_eigs'], 4)}")

# %% [markdown]
# The same plane carries a different objective for each p (Remark 9.5): the optimum A moves, the
# manifold does not. The trajectories are staircases — coordinate descent — and every one of them
# ends at A.

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for pts, costs, _ in results[2.0]["trajs"]:
    ax.semilogy(costs - results[2.0]["ref"].cost_after + 1e-17, color="k", alpha=0.4)
ax.set_xlabel("balancing steps")
ax.set_ylabel("R − R(A)  (p = 2)")
ax.set_title("the cost decreases at every step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Claims checked
#
# - C G = 0, rank C + rank G = m, and the input → output path constraints span the same space as C
#   (Prop. 9.4): the manifold is range(G), a plane here;
# - a self-consistent L maps back to the scales that produced it (proof of Prop. 9.4);
# - R is strictly convex on it (Hessian positive definite at A), the grid minimum is within one grid
#   step of A, and cvxpy's solution of eq. 9.6 on the manifold agrees with A;
# - every stochastic trajectory decreases R monotonically and ends at A.

# %%
m = pb.n_edges
assert np.abs(Cd @ Gd).max() < 1e-12 and np.abs(Pi @ Gd).max() < 1e-12
assert ranks["G"] + ranks["C"] == m and ranks["paths"] == ranks["C"] == m - pb.n_vars
assert np.linalg.matrix_rank(np.vstack([Cd, Pi])) == ranks["C"]
u_test = np.array([0.7, -1.3])
assert np.allclose(M.to_potentials(M.from_potentials(u_test)), u_test, atol=1e-12)
for p, r in results.items():
    assert r["hess_eigs"].min() > 0
    assert np.all(np.abs(r["grid_min"] - r["A"]) <= r["step"])
    cvx = balgraph.solve(pb, p=p, method="cvxpy", tol=1e-7)
    assert np.allclose(cvx.potentials, r["A"], atol=1e-5), (p, cvx.potentials, r["A"])
    for pts, costs, w in r["trajs"]:
        assert np.all(np.diff(costs) <= 1e-12 * costs[0])
        assert np.allclose(pts[-1], r["A"], atol=1e-8), (p, pts[-1], r["A"])
        assert np.allclose(w, r["ref"].weight_array, rtol=1e-8)
print("all claims hold")
