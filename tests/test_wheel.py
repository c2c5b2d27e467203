"""Chapter 00 (setup): the wheel works outside the repository.

Builds the wheel from a copy of the source (pip, no build isolation: offline), checks what it holds (the default
checkpoint and the demo pictures as package data, byte for byte; py.typed; the licence in the metadata), installs it
into a fresh virtual environment that borrows this environment's dependencies (torch, ...) but not its minglm4v, and
runs the three commands a user runs first from an empty folder far from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import minglm4v

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                    "chat_template.jinja", "preprocessor_config.json", "video_preprocessor_config.json",
                    "generation_config.json")
PICTURES = ("cat.png", "scene.png", "shapes.mp4")


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what git holds (so a build never writes into the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("minglm4v", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
              "-w", dist, src], cwd=src)
    assert r.returncode == 0, r.stderr
    (built,) = dist.glob("minglm4v-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv with the wheel installed; torch and the other dependencies come from this environment's
    site-packages through a .pth line (which does not run this environment's own .pth files, so an editable
    install of the checkout stays invisible)."""
    root = tmp_path_factory.mktemp("venv")
    r = _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root)
    assert r.returncode == 0, r.stderr
    python = root / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_borrowed_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    r = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
             cwd=root)
    assert r.returncode == 0, r.stderr
    return root


def test_wheel_holds_the_checkpoint_pictures_types_and_licence(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for f in CHECKPOINT_FILES:
            assert z.read(f"minglm4v/data/tiny-glm4v/{f}") == (ROOT / "data" / "tiny-glm4v" / f).read_bytes(), f
        for f in PICTURES:
            assert z.read(f"minglm4v/data/{f}") == (ROOT / "data" / f).read_bytes(), f
        assert "minglm4v/py.typed" in names and "minglm4v/resources.py" in names
        info = f"minglm4v-{minglm4v.__version__}.dist-info"
        assert z.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert f"Version: {minglm4v.__version__}\n" in metadata
    assert "License-Expression: MIT\n" in metadata and "License-File: LICENSE\n" in metadata
    assert "jupyterlab" not in metadata.split("Provides-Extra: book")[0]  # only in the book extra
    assert "minglm4v = minglm4v.__main__:main" in entry_points
    assert not any(n.startswith(("tests/", "chapters/", "benchmarks/")) for n in names)
    assert sum(z.getinfo(n).file_size for n in names if n.startswith("minglm4v/data/tiny-glm4v/")) > 4_000_000


def test_installed_commands_work_from_any_directory(venv, tmp_path):
    python, script = venv / "bin" / "python", venv / "bin" / "minglm4v"
    where = _run([python, "-c", "import minglm4v, minglm4v.resources as r; print(minglm4v.__file__); "
                                "print(r.default_checkpoint())"], cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    module, checkpoint = where.stdout.splitlines()
    assert Path(module).is_relative_to(venv) and Path(checkpoint).is_relative_to(venv), where.stdout
    assert not Path(module).is_relative_to(ROOT)

    r = _run([script, "--version"], cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, f"minglm4v {minglm4v.__version__}\n"), r.stderr

    r = _run([python, "-m", "minglm4v", "demo"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "patch_grid.png").stat().st_size > 10_000
    answers = [line.rsplit("-> ", 1)[1] for line in r.stdout.splitlines() if "-> " in line]
    assert answers == ["3", "yellow", "square", "left", "below", "no"]  # data/scene.png, as in test_ch06_cli.py

    shutil.copy2(ROOT / "data" / "scene.png", tmp_path / "my scene.png")
    r = _run([python, "-m", "minglm4v", "generate", "--image", "my scene.png", "--prompt",
              "What colour is the triangle?", "--max-new-tokens", "4"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "yellow"
