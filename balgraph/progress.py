"""Progress bars for long solves, sweeps and file transfers, through tqdm; quiet when not a terminal.

Examples
--------
>>> with progress(3, desc="demo", enabled=False) as bar:
...     bar.update()
"""

from __future__ import annotations

import sys

__all__ = ["progress", "Progress"]


class Progress:
    """A tqdm bar, or nothing (``enabled=False``, no terminal, or tqdm missing)."""

    def __init__(self, total=None, *, desc: str = "", unit: str = "it", enabled: bool | None = None):
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                return
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values) -> None:
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total=None, *, desc: str = "", unit: str = "it", enabled: bool | None = None) -> Progress:
    """A progress bar: shown when ``enabled`` is True, or when it is None and stderr is a terminal."""
    return Progress(total, desc=desc, unit=unit, enabled=enabled)
