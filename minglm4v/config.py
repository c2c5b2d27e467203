"""Configuration of GLM-4.1V: the vision tower, the GLM-4 text decoder and the whole model.

Mirrors transformers' `Glm4vVisionConfig`, `Glm4vTextConfig` and `Glm4vConfig` (docs/glm41v.md §1), with the same field
names, as three small frozen dataclasses that validate themselves. A config is never mutated: `dataclasses.replace`
gives a new one. Reading and writing `config.json` (its three on-disk spellings) is in config_io.py, behind
`Glm4vConfig.from_dict` / `to_dict` / `from_pretrained` / `save_pretrained`.

Presets: `glm41v_9b()` (the published model) and `tiny()`; `TINY_SPECIAL_IDS` is the one table of the special token
ids every small config here uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 24  # number of ViT blocks
    hidden_size: int = 1536  # ViT width C
    num_heads: int = 12  # attention heads; head_dim = hidden_size / num_heads = 128
    intermediate_size: int = 13696  # width of the patch merger's SwiGLU (only there!)
    out_hidden_size: int = 4096  # downsample output, merger width, and the ViT block MLP width; = text hidden_size
    hidden_act: str = "silu"  # activation of the block MLP and merger SwiGLU
    attention_bias: bool = False  # qkv/proj bias (False in GLM-4.1V)
    image_size: int = 336  # learned position table covers (image_size / patch_size)^2 = 24x24 positions
    patch_size: int = 14  # spatial patch side in pixels
    in_channels: int = 3  # RGB
    spatial_merge_size: int = 2  # m: m x m patches become one LLM token
    temporal_patch_size: int = 2  # frames per temporal patch (a still image is duplicated)
    rms_norm_eps: float = 1e-5  # eps of every vision RMSNorm
    hidden_dropout_prob: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_positions(self) -> int:
        """Entries of the learned position table (576 for the 9B model)."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch row: C * temporal_patch_size * patch_size^2 (1176)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    def validate(self) -> None:
        _positive(self, "depth", "hidden_size", "num_heads", "intermediate_size", "out_hidden_size", "image_size",
                  "patch_size", "in_channels", "spatial_merge_size", "temporal_patch_size")
        _check(self.hidden_size % self.num_heads == 0,
               f"vision hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        _check(self.head_dim % 4 == 0,
               f"vision head_dim={self.head_dim} (hidden_size/num_heads) must be divisible by 4: the 2-D rotary "
               "embedding splits half of it into row and column frequencies")
        _check(self.image_size % self.patch_size == 0,
               f"vision image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        _check(self.hidden_act == "silu", f"vision hidden_act={self.hidden_act!r}: only 'silu' is implemented")
        _check(self.in_channels == 3, f"vision in_channels={self.in_channels}: images are RGB, use 3")
        _check(self.attention_bias is False, "vision attention_bias must be false: GLM-4.1V's vision qkv and proj "
                                             "have no bias")
        _check(self.rms_norm_eps > 0, f"vision rms_norm_eps={self.rms_norm_eps} must be > 0")


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151552  # rows of embed_tokens and lm_head (the tokenizer uses fewer)
    hidden_size: int = 4096  # model width C
    intermediate_size: int = 13696  # MLP width (gate_up_proj has 2x this)
    num_hidden_layers: int = 40
    num_attention_heads: int = 32  # H; head_dim = hidden_size / H = 128
    num_key_value_heads: int = 2  # Hkv (grouped-query attention)
    hidden_act: str = "silu"
    max_position_embeddings: int = 65536  # context length
    rms_norm_eps: float = 1e-5
    attention_bias: bool = True  # q/k/v carry a bias; o_proj never does
    attention_dropout: float = 0.0
    partial_rotary_factor: float = 0.5  # rotary on the first head_dim * factor dims
    rope_theta: float = 10000.0
    mrope_section: tuple[int, ...] = (8, 12, 12)  # frequencies given to the (t, h, w) position axes
    pad_token_id: int | None = 151329  # <|endoftext|>
    eos_token_id: tuple[int, ...] = (151329, 151336, 151338, 151348)
    use_cache: bool = True
    dtype: str = "bfloat16"  # dtype the checkpoint is stored in
    initializer_range: float = 0.02

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Dims of each head that are rotated (64 for the 9B model); the rest pass through."""
        return int(self.head_dim * self.partial_rotary_factor)

    def validate(self) -> None:
        _positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings")
        _check(self.hidden_size % self.num_attention_heads == 0,
               f"text hidden_size={self.hidden_size} is not divisible by "
               f"num_attention_heads={self.num_attention_heads}")
        _check(self.num_attention_heads % self.num_key_value_heads == 0,
               f"text num_attention_heads={self.num_attention_heads} is not a multiple of "
               f"num_key_value_heads={self.num_key_value_heads}")
        _check(0 < self.partial_rotary_factor <= 1,
               f"text partial_rotary_factor={self.partial_rotary_factor} must be in (0, 1]")
        _check(self.rotary_dim % 2 == 0 and self.rotary_dim > 0,
               f"text rotary dims = int(head_dim {self.head_dim} * partial_rotary_factor {self.partial_rotary_factor})"
               f" = {self.rotary_dim} must be even and positive")
        _check(len(self.mrope_section) == 3 and all(s > 0 for s in self.mrope_section),
               f"text mrope_section={list(self.mrope_section)} must be three positive numbers (t, h, w)")
        _check(sum(self.mrope_section) == self.rotary_dim // 2,
               f"text mrope_section={list(self.mrope_section)} sums to {sum(self.mrope_section)}, but the rotary part "
               f"of a head has {self.rotary_dim // 2} frequencies (head_dim {self.head_dim} * partial_rotary_factor "
               f"{self.partial_rotary_factor} / 2); make them equal")
        _check(self.hidden_act == "silu", f"text hidden_act={self.hidden_act!r}: only 'silu' is implemented")
        _check(self.rope_theta > 0, f"text rope_theta={self.rope_theta} must be > 0")
        _check(self.rms_norm_eps > 0, f"text rms_norm_eps={self.rms_norm_eps} must be > 0")
        _check(self.attention_bias is True, "text attention_bias must be true: GLM-4.1V's q/k/v projections always "
                                            "carry a bias (transformers hard-codes it)")
        ids = ([] if self.pad_token_id is None else [self.pad_token_id]) + list(self.eos_token_id)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        _check(not bad, f"text pad/eos token ids {bad} are outside the vocabulary (vocab_size={self.vocab_size})")
        _check(self.dtype in _DTYPES, f"text dtype={self.dtype!r} is not one of {sorted(_DTYPES)}")


@dataclass(frozen=True)
class Glm4vConfig:
    text_config: TextConfig = field(default_factory=TextConfig)
    vision_config: VisionConfig = field(default_factory=VisionConfig)
    image_token_id: int = 151343  # <|image|>: placeholder replaced by vision features (video frames use it too)
    video_token_id: int = 151344  # <|video|>: only in the chat template; never reaches the model
    image_start_token_id: int = 151339  # <|begin_of_image|>
    image_end_token_id: int = 151340  # <|end_of_image|>
    video_start_token_id: int = 151341  # <|begin_of_video|>
    video_end_token_id: int = 151342  # <|end_of_video|>
    tie_word_embeddings: bool = False  # lm_head has its own weight
    # a quantized checkpoint's settings, the JSON object stored in config.json (quant.py reads it); None: not quantized
    quantization_config: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        self.vision_config.validate()
        self.text_config.validate()
        v, t = self.vision_config, self.text_config
        _check(v.out_hidden_size == t.hidden_size,
               f"vision out_hidden_size={v.out_hidden_size} must equal text hidden_size={t.hidden_size}: the merged "
               "image features replace token embeddings")
        specials = {k: getattr(self, k) for k in _SPECIAL_ID_FIELDS}
        bad = {k: i for k, i in specials.items() if not 0 <= i < t.vocab_size}
        _check(not bad, f"special token ids {bad} are outside the vocabulary (vocab_size={t.vocab_size})")
        _check(len(set(specials.values())) == len(specials), f"special token ids must be distinct, got {specials}")
        _check(not self.tie_word_embeddings, "tie_word_embeddings=True is not GLM-4.1V: lm_head has its own weight")
        _check(self.quantization_config is None or isinstance(self.quantization_config, dict),
               f"quantization_config must be a dict (a JSON object) or None, got {self.quantization_config!r:.60}")

    # ------------------------------------------------------------------ reading and writing (config_io.py)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Glm4vConfig":
        """Build a config from any of the three on-disk spellings (config_io.py)."""
        from .config_io import config_from_dict

        return config_from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """The nested layout of the published checkpoint; transformers' `Glm4vConfig(**d)` loads the same values."""
        from .config_io import config_to_dict

        return config_to_dict(self)

    @classmethod
    def from_pretrained(cls, folder) -> "Glm4vConfig":
        """Read `folder/config.json` (a path or a file:// URL)."""
        from .config_io import read_config

        return read_config(folder)

    def save_pretrained(self, folder) -> Path:
        """Write `folder/config.json`; returns its path."""
        from .config_io import write_config

        return write_config(self, folder)


# ---------------------------------------------------------------------- presets

# The special token ids of every small config (tiny(), TinyVQA's, the chapters'): where tokenizer.train_tokenizer
# puts <|begin_of_image|> ... <|video|> (its SPECIAL_TOKENS order, ids 7-12).
TINY_SPECIAL_IDS = {"image_start_token_id": 7, "image_end_token_id": 8, "image_token_id": 9,
                    "video_start_token_id": 10, "video_end_token_id": 11, "video_token_id": 12}


def glm41v_9b() -> Glm4vConfig:
    """The published GLM-4.1V-9B-Thinking config (the dataclass defaults are its values).

    `from_dict` differs on purpose: a field *missing from a file* takes transformers' class default
    (see `_TEXT_DEFAULTS_WHEN_ABSENT`), so both libraries read the same file the same way."""
    return Glm4vConfig()


def tiny(**text_overrides) -> Glm4vConfig:
    """A ~0.4 M parameter config with the full architecture, for tests and chapters on the CPU.

    Special ids sit inside a small vocabulary; `text_overrides` replace text fields (e.g. partial_rotary_factor=1.0
    together with a matching mrope_section)."""
    text = TextConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      partial_rotary_factor=0.5, mrope_section=(2, 1, 1), pad_token_id=0, eos_token_id=(0, 1),
                      dtype="float32")
    text = dataclasses.replace(text, **text_overrides)
    vision = VisionConfig(depth=2, hidden_size=64, num_heads=4, intermediate_size=128, out_hidden_size=64,
                          image_size=56)
    return Glm4vConfig(text_config=text, vision_config=vision, **TINY_SPECIAL_IDS)


# ---------------------------------------------------------------------- helpers

_DTYPES = {"float32", "bfloat16", "float16"}
_SPECIAL_ID_FIELDS = ("image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id",
                      "video_start_token_id", "video_end_token_id")


def _positive(cfg, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        _check(isinstance(v, int) and not isinstance(v, bool) and v > 0,
               f"{type(cfg).__name__}.{n}={v!r} must be a positive integer")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
