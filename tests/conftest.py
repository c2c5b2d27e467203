"""Fixtures shared by every chapter's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make tests/oracle.py importable as `oracle`

from minglm4v import config as C  # noqa: E402

import oracle  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_config() -> C.Glm4vConfig:
    return C.tiny()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config):
    """(folder, hf_model): a seeded tiny random transformers model saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny_glm4v")
    model = oracle.save_oracle(tiny_config, folder, seed=0)
    return folder, model
