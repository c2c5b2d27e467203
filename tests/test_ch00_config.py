"""Chapter 00: the config. Every on-disk spelling reads to the same values; transformers reads ours back."""

from __future__ import annotations

import dataclasses
import json

import pytest
from oracle import hf_config

from minglm4v import config
from minglm4v.errors import ConfigError

# The published 9B values (docs/glm41v.md §1.2-1.3, checked by hand against the Hub config.json).
NINE_B_TEXT = dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_hidden_layers=40,
                   num_attention_heads=32, num_key_value_heads=2, max_position_embeddings=65536, rms_norm_eps=1e-5,
                   partial_rotary_factor=0.5, rope_theta=10000.0, mrope_section=(8, 12, 12), pad_token_id=151329,
                   eos_token_id=(151329, 151336, 151338, 151348), dtype="bfloat16")
NINE_B_VISION = dict(depth=24, hidden_size=1536, num_heads=12, intermediate_size=13696, out_hidden_size=4096,
                     image_size=336, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, rms_norm_eps=1e-5)


def nested_9b_json() -> dict:
    """The published (Oct 2025) layout, as on the Hub."""
    t = dict(NINE_B_TEXT)
    text = {"model_type": "glm4v_text", "attention_bias": True, "attention_dropout": 0.0, "hidden_act": "silu",
            "initializer_range": 0.02, "use_cache": True, **t, "eos_token_id": list(t["eos_token_id"]),
            "rope_scaling": {"rope_type": "default", "mrope_section": [8, 12, 12]}}
    del text["mrope_section"]
    vision = {"model_type": "glm4v", "attention_bias": False, "hidden_act": "silu", "hidden_dropout_prob": 0.0,
              "initializer_range": 0.02, **NINE_B_VISION}
    return {"architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v", "image_start_token_id": 151339,
            "image_end_token_id": 151340, "video_start_token_id": 151341, "video_end_token_id": 151342,
            "image_token_id": 151343, "video_token_id": 151344, "tie_word_embeddings": False,
            "transformers_version": "4.57.1", "text_config": text, "vision_config": vision}


def flat_9b_json() -> dict:
    """The original (July 2025) layout: text fields at the top level, 4.x rope spelling."""
    d = nested_9b_json()
    text = d.pop("text_config")
    text.pop("model_type")
    text["torch_dtype"] = text.pop("dtype")
    text["rope_scaling"] = {"type": "default", "rope_type": "default", "mrope_section": [8, 12, 12]}
    return {**d, **text}


def v5_9b_json() -> dict:
    """transformers v5: rope settings inside rope_parameters; vision model_type glm4v_vision with axial rope."""
    d = nested_9b_json()
    t = d["text_config"]
    t.pop("rope_scaling")
    t["rope_parameters"] = {"rope_type": "default", "rope_theta": t.pop("rope_theta"),
                            "partial_rotary_factor": t.pop("partial_rotary_factor"), "mrope_section": [8, 12, 12]}
    d["vision_config"]["model_type"] = "glm4v_vision"
    d["vision_config"]["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "axial"}
    d["dtype"] = "bfloat16"
    return d


def test_preset_is_the_published_9b_config():
    cfg = config.glm41v_9b()
    for k, v in NINE_B_TEXT.items():
        assert getattr(cfg.text_config, k) == v, k
    for k, v in NINE_B_VISION.items():
        assert getattr(cfg.vision_config, k) == v, k
    assert (cfg.image_token_id, cfg.video_token_id) == (151343, 151344)
    assert cfg.text_config.head_dim == 128 and cfg.text_config.rotary_dim == 64
    assert cfg.vision_config.head_dim == 128 and cfg.vision_config.num_positions == 576
    assert cfg.vision_config.patch_dim == 1176


@pytest.mark.parametrize("spelling", [nested_9b_json, flat_9b_json, v5_9b_json])
def test_every_spelling_reads_to_the_9b_config(spelling):
    assert config.Glm4vConfig.from_dict(spelling()) == config.glm41v_9b()


@pytest.mark.parametrize("cfg", [config.glm41v_9b(), config.tiny(),
                                 config.tiny(partial_rotary_factor=1.0, mrope_section=(2, 3, 3))])
def test_to_dict_round_trips_and_transformers_reads_the_same_values(cfg, tmp_path):
    assert config.Glm4vConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save_pretrained(tmp_path)
    assert config.Glm4vConfig.from_pretrained(tmp_path) == cfg
    hf = hf_config(cfg)
    t, v = hf.text_config, hf.vision_config
    for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "pad_token_id"):
        assert getattr(t, f) == getattr(cfg.text_config, f), f
    rope = t.rope_parameters
    assert rope["rope_theta"] == cfg.text_config.rope_theta
    assert rope["partial_rotary_factor"] == cfg.text_config.partial_rotary_factor
    assert tuple(rope["mrope_section"]) == cfg.text_config.mrope_section
    for f in dataclasses.fields(config.VisionConfig):
        assert getattr(v, f.name) == getattr(cfg.vision_config, f.name), f.name
    for f in ("image_token_id", "video_token_id", "image_start_token_id", "image_end_token_id",
              "video_start_token_id", "video_end_token_id", "tie_word_embeddings"):
        assert getattr(hf, f) == getattr(cfg, f), f


def test_reads_what_transformers_save_pretrained_writes(tmp_path):
    cfg = config.tiny(partial_rotary_factor=1.0, mrope_section=(4, 2, 2))
    hf_config(cfg).save_pretrained(tmp_path)
    assert config.Glm4vConfig.from_pretrained(tmp_path) == cfg


def test_absent_fields_mean_what_transformers_makes_of_them():
    d = nested_9b_json()
    del d["text_config"]["max_position_embeddings"]
    assert config.Glm4vConfig.from_dict(d).text_config.max_position_embeddings == 32768  # transformers' class default


def bad(path: str, value):
    d = nested_9b_json()
    *parents, key = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return d


@pytest.mark.parametrize("d, message", [
    (bad("vision_config.num_heads", 7), "not divisible by num_heads"),
    (bad("vision_config.hidden_size", 12 * 98), "divisible by 4"),  # head_dim 98: even, but not a multiple of 4
    (bad("vision_config.out_hidden_size", 2048), "must equal text hidden_size"),
    (bad("text_config.num_key_value_heads", 3), "not a multiple of"),
    (bad("text_config.partial_rotary_factor", 1.0), "mrope_section"),
    (bad("text_config.rope_scaling", {"rope_type": "default", "mrope_section": [8, 12, 13]}), "sums to 33"),
    (bad("text_config.rope_scaling", {"rope_type": "yarn", "factor": 2.0}), "rope_type='yarn'"),
    (bad("text_config.hidden_act", "gelu"), "only 'silu'"),
    (bad("text_config.attention_bias", False), "attention_bias must be true"),
    (bad("text_config.vocab_size", 1000), "outside the vocabulary"),
    (bad("text_config.hidden_size", "4096"), "must be a number"),
    (bad("text_config.num_hidden_layers", 0), "positive integer"),
    (bad("text_config.frobnicate", 3), "unknown key"),
    (bad("vision_config.image_size", 335), "not a multiple of patch_size"),
    (bad("vision_config.attention_bias", True), "vision attention_bias must be false"),
    (bad("vision_config", KeyError), "no 'vision_config'"),
    (bad("model_type", "qwen2_vl"), "glm4v"),
    (bad("image_token_id", 151342), "distinct"),
])
def test_impossible_configs_raise_clear_errors(d, message):
    with pytest.raises(ConfigError, match=message):
        config.Glm4vConfig.from_dict(d)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        config.Glm4vConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.Glm4vConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(bad("text_config.num_key_value_heads", 5)))
    with pytest.raises(ConfigError, match=r"config\.json: .*num_key_value_heads=5"):
        config.Glm4vConfig.from_pretrained(tmp_path)


def test_configs_are_frozen():
    cfg = config.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.text_config.hidden_size = 3


def test_nested_model_types_are_checked():
    d = nested_9b_json()
    d["text_config"]["model_type"] = "llama"
    with pytest.raises(ConfigError, match="text_config.model_type='llama'"):
        config.Glm4vConfig.from_dict(d)
    d = v5_9b_json()
    d["vision_config"]["model_type"] = "siglip"
    with pytest.raises(ConfigError, match="vision_config.model_type='siglip'"):
        config.Glm4vConfig.from_dict(d)


def test_keys_that_change_the_computation_elsewhere_are_not_ignored():
    d = nested_9b_json()
    d["text_config"]["embedding_multiplier"] = 2.0
    with pytest.raises(ConfigError, match="embedding_multiplier"):
        config.Glm4vConfig.from_dict(d)


def test_quantization_config_is_kept_and_round_trips(tmp_path):
    quant = {"quant_method": "minglm4v", "scheme": "int4", "group_size": 128, "modules": ["lm_head"]}
    d = nested_9b_json()
    d["quantization_config"] = quant
    cfg = config.Glm4vConfig.from_dict(d)
    assert cfg.quantization_config == quant and cfg.quantization_config is not quant  # a copy, not the caller's dict
    assert cfg.to_dict()["quantization_config"] == quant and config.Glm4vConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save_pretrained(tmp_path)
    assert config.Glm4vConfig.from_pretrained(tmp_path) == cfg
    assert "quantization_config" not in config.glm41v_9b().to_dict()  # absent unless quantized
    assert config.Glm4vConfig.from_dict(nested_9b_json()).quantization_config is None
    hash(cfg)  # configs stay hashable (the dict is left out of the hash)
    with pytest.raises(ConfigError, match="quantization_config must be a JSON object"):
        config.Glm4vConfig.from_dict({**nested_9b_json(), "quantization_config": ["int4"]})


def test_one_table_of_tiny_special_ids_matches_the_trained_tokenizer():
    from minglm4v.tokenizer import SPECIAL_TOKENS
    from minglm4v.train import tiny_vqa_config

    names = {"image_start_token_id": "<|begin_of_image|>", "image_end_token_id": "<|end_of_image|>",
             "image_token_id": "<|image|>", "video_start_token_id": "<|begin_of_video|>",
             "video_end_token_id": "<|end_of_video|>", "video_token_id": "<|video|>"}
    assert config.TINY_SPECIAL_IDS == {k: SPECIAL_TOKENS.index(t) for k, t in names.items()}
    for cfg in (config.tiny(), tiny_vqa_config(400)):
        assert {k: getattr(cfg, k) for k in config.TINY_SPECIAL_IDS} == config.TINY_SPECIAL_IDS


def test_config_paths_are_local(tmp_path):
    config.tiny().save_pretrained(f"file://{tmp_path}")
    assert config.Glm4vConfig.from_pretrained(f"file://{tmp_path}") == config.tiny()
    with pytest.raises(ConfigError, match="URL"):
        config.Glm4vConfig.from_pretrained("https://huggingface.co/zai-org/GLM-4.1V-9B-Thinking")
