"""Peak memory of a call as the operating system sees it (Linux), for the benchmark scripts.

tracemalloc sees only allocations made through Python's and NumPy's allocators; a buffer that
comes from a memory map (``balgraph.backend.empty``), BLAS or PyTorch is invisible to it. The
resident set size counts them all: ``VmHWM`` (its peak) is reset through
``/proc/self/clear_refs`` before the call and read after it.
"""

from __future__ import annotations


def status(key: str) -> int:
    """A ``/proc/self/status`` size in bytes (``VmRSS``, ``VmHWM``); 0 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_above_start(fn):
    """``(fn(), bytes)``: the peak resident size during the call above the size at its start."""
    reset_peak()
    start = status("VmRSS")
    out = fn()
    return out, status("VmHWM") - start
