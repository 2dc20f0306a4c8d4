# %% [markdown]
# # Uniqueness of the balanced state (Theorem 9.1, Figure 9)
#
# **Theorem 9.1** (Convergence of stochastic balancing). *In a network of BiLU neurons with an
# L_p regularizer (p > 0), when neurons are balanced in any order that visits every neuron from time
# to time, the error E(W) is unchanged, R(W) decreases, every cumulative scale Λ_i(t) converges, and
# the weights converge to a limit W′ that is globally balanced. W′ is unique: it is the solution of a
# strictly convex problem in the variables L_ij = log(Λ_i/Λ_j) under linear constraints
# (eq. 9.6, Prop. 9.4).*
#
# **Figure 9** of the paper runs stochastic balancing 1 000 times from the same random weights and
# observes that all runs reach the same W_balanced. Here we do the same on three kinds of network —
# layered, non-layered (skip connections) and recurrent (directed cycles, self-loops) — and add every
# other schedule of `balgraph`, the global Newton solver, and the paper's own convex program solved by
# cvxpy (eq. 9.6 on the manifold of Prop. 9.4) and its geometric-program form (eq. 9.5).

# %%
import os
import time
import warnings

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import balgraph
from balgraph.gallery import random_network

SMALL = os.environ.get("BALGRAPH_SMALL") == "1"
N_ORDERS = 40 if SMALL else 1000
N_HIDDEN = 10 if SMALL else 15
P = 2.0
TOL = 1e-10
KINDS = ["layered", "dag", "recurrent"]
print(f"{N_ORDERS} random orders per network, {N_HIDDEN} hidden units, p = {P}")

# %% [markdown]
# ## The networks
#
# `random_network` draws Gaussian weights times `exp(U(-2, 2))` per edge, so the networks start far
# from balance. Every network has a bias unit feeding most hidden and output units. The reference
# W* is the global Newton solution at a per-neuron relative imbalance of 1e-13.

# %%
nets = {}
for kind in KINDS:
    g = random_network(7, kind=kind, n_hidden=N_HIDDEN, n_inputs=3, n_outputs=2)
    pb = balgraph.compile_network(g)
    ref = balgraph.solve(pb, p=P, method="newton", tol=1e-13)
    nets[kind] = (g, pb, ref)
    cycles = any(True for _ in zip(range(1), nx.simple_cycles(g)))
    print(f"{kind:9s}: {pb.n_vars} free units, {pb.n_edges} edges, directed cycles: {cycles},"
          f" cost {ref.cost_before:.4g} -> {ref.cost_after:.4g}")

# %% [markdown]
# ## Many random orders of stochastic balancing
#
# Each run balances a uniformly random neuron at every step (Section 8.1), with its own seed, until
# every neuron's relative imbalance |IN − OUT|/(IN + OUT) is below 1e-10. After every sweep (one
# step per neuron on average) we record the distance ‖W(t) − W*‖/‖W*‖ to the reference.

# %%
def rel_dist(w, ref_w):
    return float(np.linalg.norm(w - ref_w) / np.linalg.norm(ref_w))


runs = {}
t0 = time.perf_counter()
for kind, (g, pb, ref) in nets.items():
    curves, finals = [], []
    for seed in range(N_ORDERS):
        curve = []  # the callback sees the start too (iteration 0): scipy's protocol
        res = balgraph.solve(pb, p=P, method="stochastic", tol=TOL, seed=seed,
                             callback=lambda r: curve.append(rel_dist(pb.scaled_weights(r.x), ref.weight_array)))
        assert res.converged
        curves.append(curve)
        finals.append(res.weight_array)
    runs[kind] = (curves, np.array(finals))
print(f"{len(KINDS) * N_ORDERS} stochastic runs in {time.perf_counter() - t0:.1f} s")

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
for ax, kind in zip(axes, KINDS):
    curves, _ = runs[kind]
    n = max(len(c) for c in curves)
    # a finished run stays at its final distance (it no longer moves)
    mat = np.array([c + [c[-1]] * (n - len(c)) for c in curves])
    logd = np.log10(np.maximum(mat, 1e-17))
    mean, sd = logd.mean(0), logd.std(0)
    x = np.arange(n)
    ax.plot(x, mean, color="C0", label="mean of log10 distance")
    ax.fill_between(x, mean - sd, mean + sd, alpha=0.3, color="C0", label="± 1 s.d.")
    ax.set_title(f"{kind}: {N_ORDERS} random orders")
    ax.set_xlabel("sweeps (n_vars balancing steps)")
axes[0].set_ylabel("log10 ‖W(t) − W*‖ / ‖W*‖")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Every schedule, the global solver and cvxpy
#
# Random sweeps (a fresh permutation per sweep), cyclic order, independent-set (parallel) balancing
# (Prop. 4.4), alternating odd/even sets (Section 8.2), Newton on the potentials u = log Λ, and the two
# cvxpy formulations. The conic solvers resolve the optimum to about the square root of their duality
# gap, so we ask them for 1e-6 only; where Clarabel ends "almost solved" short of that, its
# warning is printed and its answer is compared all the same.

# %%
METHODS = ["random_sweep", "cyclic", "parallel", "alternating", "newton", "cvxpy", "cvxpy_dgp"]
table = {}
for kind, (g, pb, ref) in nets.items():
    _, finals = runs[kind]
    spread = max(rel_dist(w, ref.weight_array) for w in finals)
    row = {"stochastic (all orders, worst)": spread}
    for m in METHODS:
        tol = 1e-6 if m.startswith("cvxpy") else TOL
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = balgraph.solve(pb, p=P, method=m, tol=tol, seed=0)
        if caught:  # reported, not hidden: the conic solver may stop short of 1e-6
            print(f"{kind}/{m}: {caught[0].message}")
        assert res.converged or m.startswith("cvxpy"), (kind, m, res.message)
        row[m] = rel_dist(res.weight_array, ref.weight_array)
    table[kind] = row
print(f"{'method':32s}" + "".join(f"{k:>12s}" for k in KINDS))
for m in table[KINDS[0]]:
    print(f"{m:32s}" + "".join(f"{table[k][m]:12.2e}" for k in KINDS))

# %% [markdown]
# ## The balanced network computes the same function
#
# Balancing rescales weights only, so W* computes the same outputs as W (recurrent network: 12
# synchronous updates from the zero state).

# %%
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 3))
fn_err = {}
for kind, (g, pb, ref) in nets.items():
    steps = 12 if kind == "recurrent" else None
    y0 = balgraph.forward(g, X, steps=steps)
    y1 = balgraph.forward(ref.to_graph(), X, steps=steps)
    fn_err[kind] = float(np.max(np.abs(y1 - y0)) / np.max(np.abs(y0)))
print(fn_err)

# %% [markdown]
# ## Claims checked
#
# - every random order of stochastic balancing reaches W* (relative distance < 1e-8);
# - every other schedule, Newton and both cvxpy programs reach the same W* (cvxpy to 1e-4, its accuracy);
# - the cost strictly decreases (the initial weights are not balanced) and the function is unchanged.

# %%
for kind in KINDS:
    row = table[kind]
    assert row["stochastic (all orders, worst)"] < 1e-8, (kind, row)
    for m in ["random_sweep", "cyclic", "parallel", "alternating", "newton"]:
        assert row[m] < 1e-8, (kind, m, row[m])
    assert row["cvxpy"] < 1e-4 and row["cvxpy_dgp"] < 1e-4, (kind, row)
    g, pb, ref = nets[kind]
    assert ref.cost_after < ref.cost_before
    assert fn_err[kind] < 1e-10, (kind, fn_err[kind])
    curves, _ = runs[kind]
    assert all(c[-1] < 1e-8 for c in curves)
print("all claims hold")
