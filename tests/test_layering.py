"""The layering of DEVELOPERS.md holds: no import cycles, nothing below api imports it, and the
solvers never touch networkx (import-linter contracts in pyproject.toml; function-local imports
count)."""

from pathlib import Path

import pytest

importlinter = pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "broken" not in out.lower() or "0 broken" in out.lower()


def test_no_import_cycles_inside_the_package():
    import grimp

    graph = grimp.build_graph("balgraph", cache_dir=None)
    modules = sorted(m for m in graph.modules if m.startswith("balgraph"))
    for m in modules:
        for other in graph.find_modules_directly_imported_by(m):
            if other.startswith("balgraph") and other != m and not m.startswith(other + ".") \
                    and not other.startswith(m + "."):
                assert not graph.chain_exists(importer=other, imported=m), f"import cycle {m} <-> {other}"
