"""Packaging: SPDX license, py.typed, extras that compose instead of copying lists."""

import re
import tomllib
from pathlib import Path

import balgraph

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _names(requirements):
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_license_is_an_spdx_expression_with_its_file():
    assert PROJECT["license"] == "MIT"
    for pattern in PROJECT["license-files"]:
        assert list(ROOT.glob(pattern)), pattern
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    # setuptools understands a string license (PEP 639) from version 77 on
    version = re.search(r"setuptools>=(\d+)", " ".join(PYPROJECT["build-system"]["requires"]))
    assert version and int(version.group(1)) >= 77


def test_py_typed_ships_with_the_package():
    assert (Path(balgraph.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["balgraph"]


def test_test_extra_composes_the_other_extras():
    extras = PROJECT["optional-dependencies"]
    test = extras["test"]
    composed = [r for r in test if r.startswith("balgraph[")]
    assert len(composed) == 1
    included = set(composed[0][len("balgraph["):-1].split(","))
    assert included == {"cvx", "notebooks", "plot", "files", "dask"}
    # nothing copied from the included extras
    copied = _names(test) & set().union(*(_names(extras[e]) for e in included))
    assert not copied, copied
    assert _names(test) - {"balgraph"} == {"pytest", "hypothesis", "import-linter"}


def test_plot_and_files_extras_and_tqdm_core():
    extras = PROJECT["optional-dependencies"]
    assert _names(extras["plot"]) == {"matplotlib"}
    assert _names(extras["files"]) == {"safetensors"}
    assert _names(extras["dask"]) == {"dask", "distributed"}
    assert "dask" not in _names(PROJECT["dependencies"])  # the core imports Dask only when given its arrays
    assert "tqdm" in _names(PROJECT["dependencies"])
