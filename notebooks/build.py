"""Build the notebooks from their sources and execute them, storing the outputs.

Each notebook is written as a percent-format script in ``notebooks/src/NAME.py`` (cells start with
``# %%``; markdown cells with ``# %% [markdown]`` and ``# `` prefixed lines). This script turns every
source into ``notebooks/NAME.ipynb`` and executes it so that readers see the figures without running
anything. ``BALGRAPH_SMALL=1`` runs the reduced sizes that the test suite uses.

    python notebooks/build.py            # all notebooks, full size
    python notebooks/build.py uniqueness # one notebook
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def cells_from_source(text: str) -> list:
    cells, kind, lines = [], None, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(name: str, execute: bool = True, timeout: int = 1200) -> nbformat.NotebookNode:
    source = HERE / "src" / f"{name}.py"
    nb = nbformat.v4.new_notebook()
    nb.cells = cells_from_source(source.read_text())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if execute:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in (HERE / "src").glob("*.py"))
    for name in names:
        print(f"building {name} ...", flush=True)
        nbformat.write(build(name), HERE / f"{name}.ipynb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
