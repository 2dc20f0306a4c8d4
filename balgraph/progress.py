"""Progress bars for solves, sweeps and file reads and writes: one small wrapper over tqdm.

Quiet unless asked: by default a bar is shown only when ``sys.stderr`` is a terminal, so logs,
pipes, CI and notebooks captured to files stay clean.

Examples
--------
>>> from balgraph.progress import progress
>>> with progress(3, desc="sweeps", enabled=False) as bar:
...     for k in range(3):
...         bar.update()
...         bar.set_postfix(imbalance=10.0 ** -k)
>>> bar.n
3
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress", "Progress"]


def _on_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Progress:
    """A progress bar (a context manager); a no-op when disabled.

    Use :func:`progress` to make one. ``n`` counts the updates whether or not a bar is shown.
    """

    def __init__(self, total: float | None = None, *, desc: str = "", unit: str = "it",
                 enabled: bool | None = None, file=None):
        self.n = 0
        self.enabled = _on_terminal() if enabled is None else bool(enabled)
        self._bar = None
        if self.enabled:
            from tqdm import tqdm

            scale = unit == "B"  # bytes: show kB/MB
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=scale,
                             unit_divisor=1024 if scale else 1000, file=file or sys.stderr,
                             leave=False, dynamic_ncols=True, mininterval=0.2)

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` (iterations, sweeps, bytes, edges...)."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Show ``name=value`` pairs after the bar (floats in 3 significant digits)."""
        if self._bar is not None:
            shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in values.items()}
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        """Remove the bar from the terminal (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: float | None = None, *, desc: str = "", unit: str = "it",
             enabled: bool | None = None) -> Progress:
    """A progress bar on stderr.

    Parameters
    ----------
    total : number, optional
        Expected number of updates (iterations, bytes...); unknown if omitted (no ETA).
    desc : str
        Label in front of the bar.
    unit : str
        What one update counts; ``"B"`` shows bytes as kB/MB.
    enabled : bool, optional
        ``None`` (default): shown only when ``sys.stderr`` is a terminal. ``False``: a no-op
        object. ``True``: always shown.

    Returns
    -------
    Progress
        A context manager with ``update(n=1)``, ``set_postfix(**values)`` and ``close()``.
    """
    return Progress(total, desc=desc, unit=unit, enabled=enabled)
