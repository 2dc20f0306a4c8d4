"""The linear manifold of self-consistent L (Prop. 9.4, Remark 9.6): balgraph/manifold.py."""

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import networks

import balgraph
from balgraph import NetworkError
from balgraph.gallery import random_network
from balgraph.manifold import manifold


def dense(M):
    return M.constraints.toarray(), M.G.toarray()


def same_row_space(A, B):
    """Whether the rows of A and B span the same space (dense ranks)."""
    ra, rb = np.linalg.matrix_rank(A), np.linalg.matrix_rank(B)
    return ra == rb == np.linalg.matrix_rank(np.vstack([A, B]))


def indicator(M, edge_lists):
    col = {e: k for k, e in enumerate(M.edges)}
    rows = np.zeros((len(edge_lists), len(M.edges)))
    for r, path in enumerate(edge_lists):
        for e in path:
            rows[r, col[e]] += 1.0
    return rows


def paths_and_cycles(g):
    """Edge lists of every input -> output simple path and every directed cycle (Prop. 9.4)."""
    pb = balgraph.compile_network(g)
    roles = dict(zip(pb.nodes, pb.roles))
    sources = [v for v in g if roles[v] in ("input", "bias")]
    sinks = [v for v in g if roles[v] == "output"]
    found = [list(nx.utils.pairwise(p)) for s in sources for t in sinks
             for p in nx.all_simple_paths(g, s, t)]
    found += [list(nx.utils.pairwise(c + c[:1])) for c in nx.simple_cycles(g)]
    return found


# ---------------------------------------------------------------- invariants
@given(networks())
def test_C_annihilates_G_and_ranks_add_up(g):
    M = manifold(g)
    C, G = dense(M)
    assert np.abs(C @ G).max(initial=0.0) < 1e-12 * max(1.0, np.abs(C).max(initial=1.0))
    assert np.linalg.matrix_rank(C) == C.shape[0]  # independent rows
    assert np.linalg.matrix_rank(C) + np.linalg.matrix_rank(G) == G.shape[0]


@given(networks(), st.integers(0, 2**31 - 1))
def test_round_trips_L_to_scales_to_L(g, seed):
    M = manifold(g)
    pb = M.problem
    u = np.random.default_rng(seed).normal(size=pb.n_vars)
    L = M.from_potentials(u)
    assert M.is_self_consistent(L)
    np.testing.assert_allclose(M.to_potentials(L), u, atol=1e-10)
    scales = M.to_scales(L)
    assert all(scales[pb.nodes[k]] == 1.0 for k in np.flatnonzero(pb.fixed))
    np.testing.assert_allclose(M.from_scales(scales), L, atol=1e-10)
    # Independent check: the definition L_ij = log Λ_i - c_j log Λ_j on every edge.
    lam = np.array([scales[v] for v in pb.nodes])
    expected = np.log(lam[pb.dst]) - pb.degree[pb.src] * np.log(lam[pb.src])
    np.testing.assert_allclose(L, expected, atol=1e-10)


@given(networks(), st.integers(0, 2**31 - 1))
def test_random_L_is_rejected_with_a_named_cycle(g, seed):
    M = manifold(g)
    if M.n_constraints == 0:
        return
    rng = np.random.default_rng(seed)
    L = M.from_potentials(rng.normal(size=M.problem.n_vars))
    L = L + rng.normal(size=L.size)  # off range(G) with probability 1
    assert not M.is_self_consistent(L)
    with pytest.raises(NetworkError, match="not self-consistent"):
        M.to_scales(L)


@given(networks(kinds=("dag", "recurrent"), max_hidden=6, bipu=False, tanh=False, ties=False))
def test_rows_span_the_paths_and_cycles_of_prop_9_4(g):
    # Prop. 9.4: L is self-consistent iff its sum is 0 along every input -> output path and every
    # directed cycle. So C must span exactly the indicators of those paths and cycles.
    M = manifold(g)
    C, _ = dense(M)
    expected = indicator(M, paths_and_cycles(g))
    assert same_row_space(C, expected)


def test_bilu_rows_are_signed_fundamental_cycles():
    g = random_network(3, kind="recurrent", n_hidden=8, bipu_fraction=0.0)
    C = manifold(g).constraints
    assert set(np.unique(C.data)) <= {-1.0, 1.0}


# ---------------------------------------------------------------- the paper's figures
def test_figure_3_path_gives_one_row_summing_L_along_it():
    g = nx.DiGraph()
    nx.add_path(g, [1, 2, 3, 4, 5], weight=1.0)
    g.nodes[1]["role"], g.nodes[5]["role"] = "input", "output"
    M = manifold(g)
    C = M.constraints.toarray()
    assert C.shape == (1, 4)
    np.testing.assert_array_equal(np.abs(C), np.ones((1, 4)))
    assert abs(C.sum()) == 4.0  # every L_ij with the same sign: L21 + L32 + L43 + L54 = 0


def test_figure_3_directed_cycle():
    g = nx.DiGraph()
    nx.add_path(g, ["x", 1, 2, 3, 4, 5, "y"], weight=1.0)
    g.add_edge(5, 1, weight=1.0)
    M = manifold(g)
    cycle = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)]
    path = [("x", 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, "y")]
    assert same_row_space(M.constraints.toarray(), indicator(M, [cycle, path]))


def test_figure_4_two_paths_between_hidden_units():
    g = nx.DiGraph()
    nx.add_path(g, ["x", 1, 2, 3, 4, 7, "y"], weight=1.0)
    nx.add_path(g, [1, 5, 6, 7], weight=1.0)
    M = manifold(g)
    C = M.constraints.toarray()
    assert C.shape == (2, 9)
    # L21 + L32 + L43 + L74 = L51 + L65 + L76 lies in the row space.
    upper = indicator(M, [[(1, 2), (2, 3), (3, 4), (4, 7)]])
    fig4 = upper - indicator(M, [[(1, 5), (5, 6), (6, 7)]])
    assert np.linalg.matrix_rank(np.vstack([C, fig4])) == 2
    assert same_row_space(C, indicator(M, paths_and_cycles(g)))


def test_figure_5_consistent_L_gives_one_scale_per_unit():
    # Two input -> output paths through unit "i": propagation along either gives the same Λ_i.
    g = nx.DiGraph()
    nx.add_path(g, ["x1", "a", "i", "b", "y1"], weight=1.0)
    nx.add_path(g, ["x2", "c", "i", "d", "y2"], weight=1.0)
    M = manifold(g)
    scales = {"a": 2.0, "i": 0.5, "b": 3.0, "c": 5.0, "d": 0.25}
    L = M.from_scales(scales)
    got = M.to_scales(L)
    for v, lam in scales.items():
        assert got[v] == pytest.approx(lam, rel=1e-12)
    lab = {e: k for k, e in enumerate(M.edges)}
    alpha = L[lab[("x1", "a")]] + L[lab[("a", "i")]]
    gamma = L[lab[("x2", "c")]] + L[lab[("c", "i")]]
    assert alpha == pytest.approx(gamma) == pytest.approx(np.log(0.5))


def test_bipu_row_carries_the_degree():
    # x -> h (degree 2) -> y: L1 = u, L2 = -2u, so 2 L1 + L2 = 0.
    g = nx.DiGraph()
    g.add_node("h", activation="bipu", degree=2.0)
    g.add_edges_from([("x", "h"), ("h", "y")], weight=1.0)
    M = manifold(g)
    row = dict(zip(M.edges, M.constraints.toarray()[0]))
    assert M.n_constraints == 1
    assert row[("x", "h")] / row[("h", "y")] == pytest.approx(2.0)


def test_self_loops():
    g = nx.DiGraph()
    g.add_node("h", activation="bipu", degree=0.5)
    g.add_edges_from(
        [("x", "k"), ("k", "y"), ("k", "k"), ("x", "h"), ("h", "y"), ("h", "h")], weight=1.0
    )
    M = manifold(g)
    lab = {e: k for k, e in enumerate(M.edges)}
    C = M.constraints.toarray()
    bilu_loop = np.zeros(len(M.edges))
    bilu_loop[lab[("k", "k")]] = 1.0  # λ/λ: L_kk = 0 is a constraint by itself
    kk = lab[("k", "k")]
    assert any(np.allclose(row / row[kk], bilu_loop) for row in C if row[kk])
    # BiPU loop: L_hh = (1 - c) u_h = 0.5 L_xh, whichever variable h is.
    L = M.from_potentials(np.array([0.3, 0.7]))
    assert L[lab[("h", "h")]] == pytest.approx(0.5 * L[lab[("x", "h")]])
    assert M.is_self_consistent(L)


def test_ties_and_fixed_hidden_units():
    g = nx.DiGraph()
    g.add_node("h1", tie="t")
    g.add_node("h2", tie="t")
    g.add_node("z", activation="tanh")
    g.add_edges_from(
        [("x", "h1"), ("x", "h2"), ("h1", "z"), ("z", "h2"), ("h1", "y"), ("h2", "y")], weight=1.0
    )
    M = manifold(g)
    C, G = dense(M)
    assert G.shape == (6, 1)
    assert C.shape == (5, 6) and np.abs(C @ G).max() == 0
    L = M.from_scales({"h1": 2.0, "h2": 2.0})
    assert M.to_scales(L)["h2"] == pytest.approx(2.0) and M.to_scales(L)["z"] == 1.0
    with pytest.raises(NetworkError, match="tie group"):
        M.from_scales({"h1": 2.0, "h2": 3.0})
    with pytest.raises(NetworkError, match="fixed"):
        M.from_scales({"z": 2.0})


def test_zero_weight_edges_keep_a_column_and_stay_out_of_nonzero_cycles():
    g = random_network(7, kind="dag", n_hidden=6)
    for e in list(g.edges)[::4]:
        g.edges[e]["weight"] = 0.0
    pb = balgraph.compile_network(g)
    assert balgraph.diagnose(pb).ok and np.count_nonzero(pb.weight == 0) == 7
    M = manifold(pb)
    assert M.constraints.shape[1] == pb.n_edges
    zero = pb.weight == 0
    assert not np.any(M.tree & zero)
    rows = M.constraints[np.flatnonzero(~zero[~M.tree])]
    assert rows[:, np.flatnonzero(zero)].nnz == 0


def test_disconnected_unit_is_named():
    g = nx.DiGraph([("x", "h"), ("h", "y"), ("a", "b"), ("b", "a")])
    nx.set_edge_attributes(g, 1.0, "weight")
    with pytest.raises(NetworkError, match="'a'"):
        manifold(g)


def test_layered_problem_is_sparse_and_exact():
    rng = np.random.default_rng(0)
    sizes = [30, 20, 10, 20, 30]
    mats = [rng.normal(size=(sizes[k + 1], sizes[k])) for k in range(4)]
    pb = balgraph.Problem.from_layers(mats, [rng.normal(size=n) for n in sizes[1:]])
    M = manifold(pb)
    assert M.n_constraints == pb.n_edges - pb.n_vars
    assert sp.linalg.norm(M.constraints @ pb.G) == 0
    assert M.constraints.nnz <= 3 * M.n_constraints  # the bias unit makes every cycle a triangle
    u = rng.normal(size=pb.n_vars)
    np.testing.assert_allclose(M.to_potentials(pb.edge_log_scale(u)), u, atol=1e-12)


def test_inputs_are_not_mutated_and_shapes_are_checked():
    g = random_network(2)
    M = manifold(g)
    L = M.from_potentials(np.ones(M.problem.n_vars))
    before = L.copy()
    M.to_scales(L)
    np.testing.assert_array_equal(L, before)
    with pytest.raises(NetworkError, match="one L per edge"):
        M.to_scales(L[:-1])
