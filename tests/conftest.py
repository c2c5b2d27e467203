"""Fixtures shared by every chapter's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # make tests/oracle.py importable as `oracle`

import oracle  # noqa: E402

from minglm4v import config  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_config() -> config.Glm4vConfig:
    return config.tiny()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config):
    """(folder, hf_model): a seeded tiny random transformers model saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny_glm4v")
    model = oracle.save_oracle(tiny_config, folder, seed=0)
    return folder, model


CORPUS = [
    "What kind of animal is this? It is a cat with green eyes.",
    "Describe the image in one sentence. A white cup of coffee on a wooden table.",
    "An astronaut in an orange suit stands in front of a flag.",
    "A rocket lifts off into a blue sky, leaving a trail of smoke.",
    "Is there a red square left of the blue circle? Yes. No. Maybe.",
    "How many shapes are there? One, two, three, four, five.",
    "Which way does the ball move? Left, right, up, down.",
] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small byte-level BPE with GLM-4.1V's special tokens at the ids tiny() uses (<|image|> = 9, ...)."""
    from minglm4v.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=400)
    cfg = config.tiny()
    assert tok.token_to_id("<|image|>") == cfg.image_token_id
    assert tok.token_to_id("<|begin_of_video|>") == cfg.video_start_token_id
    assert tok.vocab_size <= cfg.text_config.vocab_size
    return tok


@pytest.fixture(scope="session")
def tiny_processor_dir(tmp_path_factory, tiny_tokenizer):
    """A folder with tokenizer.json, tokenizer_config.json and preprocessor_config.json for the tiny config."""
    from minglm4v.processor import Processor

    folder = tmp_path_factory.mktemp("tiny_processor")
    Processor(tiny_tokenizer).save_pretrained(folder)
    return folder
