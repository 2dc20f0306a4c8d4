"""What a network is: units, variables and edge blocks (:class:`Problem`), the networkx
boundary (:func:`compile_network`), and the existence diagnosis (:func:`diagnose`)."""

from .blocks import DenseBlock, EdgeBlock
from .network import GraphSnapshot, WeightSpec, as_problem, compile_network, problem_graph
from .problem import Problem
from .structure import Diagnosis, diagnose, ensure_finite_optimum
from .units import HOMOGENEOUS_ACTIVATIONS, ROLES, is_homogeneous

__all__ = ["DenseBlock", "Diagnosis", "EdgeBlock", "GraphSnapshot", "HOMOGENEOUS_ACTIVATIONS", "Problem",
           "ROLES", "WeightSpec", "as_problem", "compile_network", "problem_graph", "diagnose", "ensure_finite_optimum", "is_homogeneous"]
