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
    for key in ("dependencies", "test"):
        m = re.search(rf"^{key}\s*=\s*(\[.*?\])", text, re.M | re.S)
        out[key] = ast.literal_eval(re.sub(r"#.*", "", m.group(1)))
    return out


def test_environment_yml_mirrors_pyproject():
    project = _pyproject()
    runtime = _requirements(project["dependencies"])
    test = _requirements(project["test"])
    conda, pip, in_pip, in_deps = {}, {}, False, False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
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
            conda.update(_requirements([m.group(2)]))
    expected_conda = {CONDA_NAMES.get(k, k): v for k, v in runtime.items()}
    assert {k: v for k, v in conda.items() if k not in ("python", "pip")} == expected_conda
    assert pip == test
    assert conda["python"] == project["requires-python"]


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
