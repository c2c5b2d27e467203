"""Configuration of GLM-4.1V: the vision tower, the GLM-4 text decoder and the whole model.

Mirrors transformers' `Glm4vVisionConfig`, `Glm4vTextConfig` and `Glm4vConfig` (docs/glm41v.md §1), with the same field
names, as three small frozen dataclasses. A config is never mutated: `dataclasses.replace` gives a new one.

On disk a `config.json` comes in three spellings, and `Glm4vConfig.from_dict` reads all of them:
  * old flat layout (July 2025): the text fields sit at the top level next to `vision_config`;
  * nested layout (published 9B config since Oct 2025): the text fields live in `text_config`;
  * transformers v5: rope settings gathered in `rope_parameters = {rope_type, rope_theta, partial_rotary_factor,
    mrope_section}`.
`to_dict` writes the nested layout of the published checkpoint. Keys we do not know raise `ConfigError` instead of
being dropped; keys that only matter to transformers' bookkeeping (output flags, versions, ...) are listed below in
`_IGNORED_KEYS` and skipped on purpose.
"""

from __future__ import annotations

import dataclasses
import json
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
               f"text hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
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

    # ------------------------------------------------------------------ reading and writing

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Glm4vConfig":
        """Build a config from any of the three on-disk spellings (see the module docstring)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a dict (the contents of config.json), got {type(d).__name__}")
        d = dict(d)
        model_type = d.pop("model_type", "glm4v")
        _check(model_type == "glm4v", f"model_type={model_type!r}: minglm4v reads GLM-4.1V configs ('glm4v') only")
        archs = d.pop("architectures", None) or ["Glm4vForConditionalGeneration"]
        _check(archs == ["Glm4vForConditionalGeneration"],
               f"architectures={archs}: minglm4v builds Glm4vForConditionalGeneration only")

        vision = d.pop("vision_config", None)
        _check(isinstance(vision, dict), "config has no 'vision_config' dict; is this a GLM-4.1V config.json?")
        text = d.pop("text_config", None)
        top = {k: d.pop(k) for k in list(d) if k in _TOP_FIELDS}
        if text is None:
            # old flat layout: whatever is left at the top level describes the text model
            text, d = d, {}
        _check(isinstance(text, dict), f"text_config must be a dict, got {type(text).__name__}")
        d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS}
        for k in ("dtype", "torch_dtype"):  # nested layout may keep the storage dtype at the top level
            if k in d:
                top_dtype = d.pop(k)
                if text.get("dtype", text.get("torch_dtype")) is None:
                    text = {**text, "dtype": top_dtype}
        _no_unknown(d, "top level of config")
        return cls(text_config=_text_from_dict(text), vision_config=_vision_from_dict(vision), **top)

    def to_dict(self) -> dict[str, Any]:
        """The nested layout of the published checkpoint; transformers' `Glm4vConfig(**d)` loads the same values."""
        t = dataclasses.asdict(self.text_config)
        mrope, theta, factor = t.pop("mrope_section"), t.pop("rope_theta"), t.pop("partial_rotary_factor")
        text = {"model_type": "glm4v_text", **t, "eos_token_id": list(self.text_config.eos_token_id),
                "partial_rotary_factor": factor, "rope_theta": theta,
                "rope_scaling": {"rope_type": "default", "mrope_section": list(mrope)}}
        vision = {"model_type": "glm4v", **dataclasses.asdict(self.vision_config)}
        top = {k: getattr(self, k) for k in _TOP_FIELDS}
        return {"architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v", **top,
                "text_config": text, "vision_config": vision}

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Glm4vConfig":
        """Read `folder/config.json`."""
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path} not found: a checkpoint folder must contain config.json")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-download the checkpoint's config.json") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save_pretrained(self, folder: str | Path) -> Path:
        path = Path(folder) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# ---------------------------------------------------------------------- presets

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
    return Glm4vConfig(text_config=text, vision_config=vision, image_token_id=9, video_token_id=12,
                       image_start_token_id=7, image_end_token_id=8, video_start_token_id=10, video_end_token_id=11)


# ---------------------------------------------------------------------- helpers

_DTYPES = {"float32", "bfloat16", "float16"}
_SPECIAL_ID_FIELDS = ("image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id",
                      "video_start_token_id", "video_end_token_id")
_TOP_FIELDS = _SPECIAL_ID_FIELDS + ("tie_word_embeddings",)
_TEXT_FIELDS = {f.name for f in dataclasses.fields(TextConfig)}
_VISION_FIELDS = {f.name for f in dataclasses.fields(VisionConfig)}

# A field missing from a file means what transformers makes of it, which for these is not the 9B value.
_TEXT_DEFAULTS_WHEN_ABSENT = {"max_position_embeddings": 32768, "partial_rotary_factor": 1.0, "pad_token_id": None,
                              "eos_token_id": ()}

# Keys transformers writes that do not change the computation. Skipped on purpose, by name.
_IGNORED_KEYS = {
    "transformers_version", "_name_or_path", "output_attentions", "output_hidden_states", "return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "tokenizer_class",
    "torchscript", "_commit_hash", "_attn_implementation_autoset", "use_return_dict", "bos_token_id",
    "sep_token_id", "decoder_start_token_id", "tf_legacy_loss", "pruned_heads", "add_cross_attention",
    "cross_attention_hidden_size", "finetuning_task", "task_specific_params", "architectures",
    "model_type", "attn_implementation",  # model_type is checked first (_model_type)
    "image_processor_type", "processor_class",  # seen in hand-made configs
}


def _text_from_dict(d: dict[str, Any]) -> TextConfig:
    _model_type(d, ("glm4v_text", "glm4v"), "text_config")
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS}
    if "torch_dtype" in d:  # transformers 4.x spelling
        d.setdefault("dtype", d.pop("torch_dtype"))
        d.pop("torch_dtype", None)
    rope = {}
    for key in ("rope_parameters", "rope_scaling"):  # v5 spelling, then 4.x spelling
        val = d.pop(key, None)
        if val is not None:
            _check(isinstance(val, dict), f"text {key} must be a dict, got {val!r}")
            for k, v in val.items():
                rope.setdefault(k, v)
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    _check(rope_type == "default", f"text rope_type={rope_type!r}: GLM-4.1V uses 'default' (no rope scaling)")
    for k in ("rope_theta", "partial_rotary_factor", "mrope_section"):
        if k in rope:
            _check(k not in d or d[k] == rope[k], f"text {k} given twice with different values: {d.get(k)} "
                                                   f"and {rope[k]} (in rope_parameters/rope_scaling)")
            d[k] = rope.pop(k)
    _no_unknown(rope, "text rope_parameters/rope_scaling")
    if "head_dim" in d:
        head_dim = d.pop("head_dim")
        hidden, heads = d.get("hidden_size", TextConfig.hidden_size), d.get("num_attention_heads",
                                                                             TextConfig.num_attention_heads)
        _check(head_dim is None or head_dim * heads == hidden,
               f"text head_dim={head_dim} but hidden_size/num_attention_heads = {hidden}/{heads}: GLM-4.1V needs "
               "head_dim * num_attention_heads == hidden_size")
    for k, v in _TEXT_DEFAULTS_WHEN_ABSENT.items():
        d.setdefault(k, v)
    if d.get("eos_token_id") is None:
        d["eos_token_id"] = ()
    if isinstance(d.get("eos_token_id"), int):
        d["eos_token_id"] = [d["eos_token_id"]]
    for k in ("eos_token_id", "mrope_section"):
        if k in d:
            d[k] = tuple(d[k])
    if d.get("dtype") is not None:
        d["dtype"] = str(d["dtype"]).removeprefix("torch.")
    elif "dtype" in d:
        d.pop("dtype")
    _no_unknown({k: v for k, v in d.items() if k not in _TEXT_FIELDS}, "text_config")
    return _build(TextConfig, d, "text_config")


def _vision_from_dict(d: dict[str, Any]) -> VisionConfig:
    _model_type(d, ("glm4v", "glm4v_vision"), "vision_config")
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS and k not in ("torch_dtype", "dtype")}
    rope = d.pop("rope_parameters", None)  # v5 writes {"rope_type": "axial", ...}: the 2-D vision rotary, fixed
    if rope is not None:
        _check(isinstance(rope, dict) and rope.get("rope_type", "axial") in ("axial", "default"),
               f"vision rope_parameters={rope!r}: only the built-in 2-D (axial) rotary is implemented")
        theta = rope.get("rope_theta", 10000.0)
        _check(theta == 10000.0, f"vision rope_theta={theta}: the GLM-4.1V vision rotary uses 10000")
    _no_unknown({k: v for k, v in d.items() if k not in _VISION_FIELDS}, "vision_config")
    return _build(VisionConfig, d, "vision_config")


def _model_type(d: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    mt = d.get("model_type", allowed[0])
    _check(mt in allowed, f"{where}.model_type={mt!r}: a GLM-4.1V config has {' or '.join(map(repr, allowed))} here")


def _build(cls, d: dict[str, Any], where: str):
    for f in dataclasses.fields(cls):
        if f.name in d and f.type in ("int", "float") and not isinstance(d[f.name], (int, float)):
            raise ConfigError(f"{where}.{f.name}={d[f.name]!r} must be a number")
        if f.name in d and f.type == "int" and isinstance(d[f.name], float):
            _check(d[f.name].is_integer(), f"{where}.{f.name}={d[f.name]!r} must be a whole number")
            d[f.name] = int(d[f.name])
    return cls(**d)


def _no_unknown(d: dict[str, Any], where: str) -> None:
    if d:
        raise ConfigError(f"unknown key(s) in {where}: {sorted(d)}. minglm4v does not know what they mean for "
                          "GLM-4.1V; remove them or report them if the published checkpoint uses them")


def _positive(cfg, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        _check(isinstance(v, int) and not isinstance(v, bool) and v > 0,
               f"{type(cfg).__name__}.{n}={v!r} must be a positive integer")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
