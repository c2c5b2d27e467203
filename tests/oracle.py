"""Shared test helpers: the transformers oracle and a tolerance-aware comparison.

transformers is imported here, in tests only; nothing in `minglm4v/` imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from minglm4v.config import Glm4vConfig


def hf_config(cfg: Glm4vConfig):
    """transformers' Glm4vConfig holding the same values as ours."""
    import transformers

    return transformers.Glm4vConfig(**cfg.to_dict())


def build_oracle(cfg: Glm4vConfig, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A seeded random `Glm4vForConditionalGeneration` in eval mode.

    transformers initialises norms to 1 and biases to 0; every parameter is re-drawn here (norm weights around 1,
    the rest ~ N(0, 0.02..0.1)) so that a test notices a missing bias or a swapped norm."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.Glm4vForConditionalGeneration(hf_config(cfg)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif "embed" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.08 * noise)
    return model.to(dtype)


def save_oracle(cfg: Glm4vConfig, folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32, **save_kwargs):
    """Build the oracle and `save_pretrained` it into `folder`; returns the model."""
    model = build_oracle(cfg, seed=seed, dtype=dtype)
    model.save_pretrained(folder, **save_kwargs)
    return model


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0, what: str = ""):
    """Like torch.testing.assert_close, but says where the largest difference is."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    limit = atol + rtol * expected.double().abs()
    if not bool((diff <= limit).all()):
        idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(diff - limit), diff.shape))
        raise AssertionError(f"{what}: max abs diff {diff.max().item():.3g} > tolerance (atol={atol}, rtol={rtol}); "
                             f"worst at index {idx}: got {actual[idx].item()!r}, expected {expected[idx].item()!r}")
    return diff.max().item() if diff.numel() else 0.0


def noise_photo(h: int, w: int, seed: int):
    """A seeded h x w RGB PIL image of uniform noise: the vision tower's input without meaning."""
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def checkpoint_with_processor(folder: Path, checkpoint: Path, processor_dir: Path) -> Path:
    """Copy a saved model and a processor's files into one folder, the layout of a published checkpoint."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for src in (checkpoint, processor_dir):
        for f in Path(src).iterdir():
            shutil.copy(f, folder / f.name)
    return folder


def edit_tensors(folder: Path, fn) -> Path:
    """Rewrite `folder/model.safetensors` after `fn(tensors)` changed the dict in place (tests of bad checkpoints)."""
    from safetensors.torch import load_file, save_file

    path = Path(folder) / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return path
