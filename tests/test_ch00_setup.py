"""Chapter 00: the project is set up the way the README says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _requirements(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*([<>=!~].*)?$", line)
        assert m, f"cannot parse requirement {line!r}"
        out[m.group(1).lower()] = (m.group(2) or "").replace(" ", "")
    return out


def _pyproject() -> dict:
    """The few pyproject.toml values the test needs (tomllib is Python >= 3.11; we support 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    out = {"requires-python": re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M).group(1)}
    for key in ("dependencies", "test", "book"):
        m = re.search(rf"^{key}\s*=\s*(\[.*?\])", text, re.M | re.S)
        out[key] = ast.literal_eval(re.sub(r"#.*", "", m.group(1)))
    return out


def _environment_yml() -> tuple[dict, dict, dict]:
    """(conda runtime, conda `book` extra, pip) requirements of environment.yml."""
    conda, book, pip, in_pip, in_deps, in_book = {}, {}, {}, False, False, False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^\s+# book extra\s*$", raw):
            in_book = True
            continue
        line = raw.split("#")[0].rstrip()
        if re.match(r"^\S", line):  # a top-level key
            in_deps = line.startswith("dependencies:")
            continue
        if not in_deps:
            continue
        if re.match(r"^\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"^(\s+)- (.+)$", line)
        if not m:
            continue
        if in_pip and len(m.group(1)) > 2:
            if not m.group(2).startswith("-e"):
                pip.update(_requirements([m.group(2)]))
        else:
            in_pip = False
            (book if in_book else conda).update(_requirements([m.group(2)]))
    return conda, book, pip


def test_environment_yml_mirrors_pyproject():
    project = _pyproject()
    conda, book, pip = _environment_yml()
    expected_conda = {CONDA_NAMES.get(k, k): v for k, v in _requirements(project["dependencies"]).items()}
    assert {k: v for k, v in conda.items() if k not in ("python", "pip")} == expected_conda
    assert book == _requirements(project["book"])
    assert pip == _requirements(project["test"])
    assert conda["python"] == project["requires-python"]


def test_extras_and_what_the_makefile_installs():
    project = _pyproject()
    runtime, test, book = (_requirements(project[k]) for k in ("dependencies", "test", "book"))
    assert "jupyterlab" in book and "jupyterlab" not in runtime  # the package runs without Jupyter
    assert {"pytest", "transformers", "ruff", "jupytext"} <= set(test)
    assert re.search(r'pip install .*-e "\.\[test,book\]"', (ROOT / "Makefile").read_text())


def test_one_version_license_and_typing_marker():
    import minglm4v

    text = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'^version\s*=\s*"', text, re.M), "the version is written in minglm4v/__init__.py only"
    assert re.search(r'^dynamic\s*=\s*\["version"\]', text, re.M)
    assert re.search(r'^version\s*=\s*\{\s*attr\s*=\s*"minglm4v.__version__"\s*\}', text, re.M)
    assert re.fullmatch(r"\d+\.\d+\.\d+", minglm4v.__version__)
    assert not re.search(r"^version:", (ROOT / "CITATION.cff").read_text(), re.M)  # no second copy of it
    assert re.search(r'^license\s*=\s*"MIT"', text, re.M) and 'license-files = ["LICENSE"]' in text
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) 2026 minglm4v authors" in licence
    assert (ROOT / "minglm4v" / "py.typed").is_file()
    cff = (ROOT / "CITATION.cff").read_text()
    assert cff.startswith("cff-version: 1.2.0") and "license: MIT" in cff and "minglm4v authors" in cff


def test_package_never_imports_the_oracle():
    for path in (ROOT / "minglm4v").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+transformers\b", text, re.M), f"{path} imports transformers"


def test_readme_generated_sections_are_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme", ROOT / "scripts" / "readme.py")
    readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readme)
    text = (ROOT / "README.md").read_text()
    assert readme.render(text) == text, "README.md is out of date: run `python scripts/readme.py`"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_shipped_files_are_found_in_the_checkout():
    import pytest

    from minglm4v.errors import ShippedDataError
    from minglm4v.resources import data_dir, default_checkpoint, shipped

    assert data_dir() == ROOT / "data"  # a checkout: the repository's own folder (a wheel: minglm4v/data)
    assert default_checkpoint() == ROOT / "data" / "tiny-glm4v" and (default_checkpoint() / "config.json").is_file()
    assert shipped("scene.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShippedDataError, match="nope.png"):
        shipped("nope.png")


def test_public_api_names_every_error_class_and_the_entry_points():
    """Every error class of errors.py, and the transformers-style entry points, import from the top level."""
    import inspect

    import minglm4v
    import minglm4v.errors as errors

    classes = {n for n, v in vars(errors).items() if inspect.isclass(v) and issubclass(v, Exception)
               and v.__module__ == "minglm4v.errors"}
    assert len(classes) >= 20 and classes <= set(minglm4v.__all__)
    for name in minglm4v.__all__:
        assert getattr(minglm4v, name) is not None, name
    import minglm4v.pipelines  # a submodule import must not shadow the function of the same short name
    from minglm4v import AutoProcessor, Glm4vForConditionalGeneration, generate, pipeline, stream
    from minglm4v.model import Glm4vForConditionalGeneration as defined

    assert Glm4vForConditionalGeneration is defined and callable(AutoProcessor.from_pretrained)
    assert all(callable(f) for f in (generate, pipeline, stream))
