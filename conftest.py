"""Doctests of the package run with the tests; modules that need an optional dependency
are collected only where it is installed."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob.append("balgraph/torch/*")
if importlib.util.find_spec("cvxpy") is None:
    collect_ignore_glob.append("balgraph/solvers/cvx.py")
