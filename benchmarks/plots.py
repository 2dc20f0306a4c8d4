"""Figures of a benchmark report: convergence per workload and the scaling curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_report(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["workloads"])
    for axis_kind in ("time", "passes"):
        fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 7), squeeze=False)
        for col, name in enumerate(names):
            entry = report["workloads"][name]
            best = min((r["log_cost"] for r in entry["runs"] if "log_cost" in r), default=None)
            for r in entry["runs"]:
                h = r.get("history") or {}
                if not h.get("time"):
                    continue
                x = np.asarray(h["time"])
                if axis_kind == "passes":
                    x = x / entry["weight_pass"]
                if h.get("log_cost") and best is not None:
                    excess = np.maximum(np.expm1(np.minimum(np.asarray(h["log_cost"]) - best, 700)), 1e-17)
                    axes[0, col].loglog(np.maximum(x, 1e-6), excess, label=r["method"])
                if h.get("max_imbalance"):
                    axes[1, col].loglog(np.maximum(x, 1e-6), h["max_imbalance"], label=r["method"])
            axes[0, col].set_title(name)
            axes[0, col].set_ylabel("relative cost excess")
            axes[1, col].set_ylabel("max relative imbalance")
            axes[1, col].set_xlabel("wall time (s)" if axis_kind == "time" else "weight-passes")
            axes[1, col].axhline(report["tol"], color="gray", lw=0.5)
            axes[0, col].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"convergence_{axis_kind}.png", dpi=110)
        plt.close(fig)
    if report.get("scaling"):
        rows = report["scaling"]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.loglog([r["edges"] for r in rows], [r["time"] for r in rows], "o-", label="Newton")
        ax.set_xlabel("weights")
        ax.set_ylabel("time to tolerance (s)")
        ax.set_title("deep MLP, 50 hidden layers")
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=110)
        plt.close(fig)
