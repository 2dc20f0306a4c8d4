"""Hypothesis strategies for random networks, shared by the test modules."""

from __future__ import annotations

import networkx as nx
from hypothesis import strategies as st

from balgraph.gallery import random_network


@st.composite
def networks(
    draw,
    kinds=("dag", "layered", "recurrent"),
    max_hidden: int = 7,
    bipu: bool = True,
    tanh: bool = True,
    ties: bool = True,
) -> nx.DiGraph:
    """Random networks with a finite optimum: DAGs with skips, layered, recurrent with self-loops,
    optionally with tanh (fixed) units, BiPU units and tie groups."""
    return random_network(
        draw(st.integers(0, 2**31 - 1)),
        kind=draw(st.sampled_from(kinds)),
        n_inputs=draw(st.integers(1, 3)),
        n_hidden=draw(st.integers(2, max_hidden)),
        n_outputs=draw(st.integers(1, 3)),
        density=draw(st.floats(0.1, 0.8)),
        bias=draw(st.booleans()),
        tanh_fraction=draw(st.sampled_from([0.0, 0.2])) if tanh else 0.0,
        bipu_fraction=draw(st.sampled_from([0.0, 0.3])) if bipu else 0.0,
        n_ties=draw(st.integers(0, 1)) if ties else 0,
    )


exponents = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 4.0]) | st.floats(0.25, 4.0)
