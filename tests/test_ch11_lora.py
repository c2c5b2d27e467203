"""Chapter 11: LoRA and QLoRA (minglm4v/lora.py), PEFT-format adapter folders (adapters.py) and
fine-tuning (finetune.py, finetune_data.py).

The oracle is transformers' Glm4vForConditionalGeneration with peft (both test-only): adapters minglm4v writes load
with `peft.PeftModel.from_pretrained` and give the same logits (float32, 1e-4), adapters peft writes load into
minglm4v, and a merged checkpoint written by `minglm4v.save` loads in transformers unchanged.
"""

from __future__ import annotations

import json

import oracle
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_ch03_mrope import Prompt
from torch import nn

import minglm4v
from minglm4v import adapters, lora
from minglm4v.config import tiny
from minglm4v.errors import AdapterError, DatasetError
from minglm4v.lora import LoraConfig, LoraLinear

# transformers 5 deprecates a name that peft 0.21 still calls; nothing to do with the code under test
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
ATOL = 1e-4  # float32 logits, as chapter 04
ALL = LoraConfig(r=4, alpha=8.0, vision=True, merger=True)  # every target kind


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(folder, ours, oracle): a seeded random transformers model and minglm4v's load of its save_pretrained."""
    folder = tmp_path_factory.mktemp("lora_base")
    hf = oracle.save_oracle(tiny(), folder, seed=3)
    return folder, minglm4v.load(folder), hf


def image_prompt(seed=5):
    grids = [[1, 4, 6]]
    ids, types = Prompt(seed=seed).text(5).image(grids[0]).text(4).tensors()
    g = torch.Generator().manual_seed(seed)
    pv = torch.randn(24, tiny().vision_config.patch_dim, generator=g)
    return {"input_ids": ids, "pixel_values": pv, "image_grid_thw": torch.tensor(grids)}, types


def randomise_b(model, seed=11, scale=0.2):
    """A trained-looking adapter: B drawn at random (a fresh adapter has B = 0 and changes nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * scale)


def fresh(folder, config=ALL, seed=0):
    model = minglm4v.load(folder)
    lora.add_lora(model, config, seed=seed)
    randomise_b(model)
    return model


@torch.no_grad()
def test_targets_and_trainable_fraction(pair):
    folder, _, _ = pair
    model = minglm4v.load(folder)
    base_total = lora.parameter_counts(model)[1]
    paths = lora.add_lora(model, LoraConfig(r=4))
    layers = tiny().text_config.num_hidden_layers
    assert len(paths) == 6 * layers and all(p.startswith("model.language_model.layers.") for p in paths)
    trainable, total = lora.parameter_counts(model)
    t = tiny().text_config
    per_layer = sum(4 * (i + o) for i, o in [(t.hidden_size, t.num_attention_heads * t.head_dim)] * 2
                    + [(t.hidden_size, t.num_key_value_heads * t.head_dim)] * 2
                    + [(t.hidden_size, 2 * t.intermediate_size), (t.intermediate_size, t.hidden_size)])
    assert trainable == per_layer * layers == total - base_total  # the adapter trains, the base is frozen
    assert sum(p.numel() for p in lora.trainable(model)) == trainable
    vision = minglm4v.load(folder)
    assert len(lora.add_lora(vision, ALL)) == 6 * layers + 5 * tiny().vision_config.depth + 4


@torch.no_grad()
def test_fresh_adapter_changes_nothing_and_forward_is_the_formula(pair):
    folder, ours, _ = pair
    inputs, _ = image_prompt()
    model = minglm4v.load(folder)
    lora.add_lora(model, ALL)
    assert torch.equal(model(**inputs), ours(**inputs))  # B = 0
    randomise_b(model)
    layer = model.language_model.layers[0].self_attn.q_proj
    x = torch.randn(3, 7, layer.in_features, generator=torch.Generator().manual_seed(0))
    want = layer.base(x) + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * (8.0 / 4)
    oracle.assert_close(layer(x), want, atol=1e-6, what="LoRA forward")
    assert not torch.allclose(model(**inputs), ours(**inputs), atol=1e-2)  # the adapter does something


@torch.no_grad()
def test_merge_and_unmerge_are_exact(pair):
    folder, _, _ = pair
    inputs, _ = image_prompt()
    model = fresh(folder)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with_adapter = model(**inputs)
    lora.merge(model)
    oracle.assert_close(model(**inputs), with_adapter, atol=1e-5, what="merged logits")
    with pytest.raises(AdapterError, match="already merged"):
        lora.merge(model)
    lora.unmerge(model)
    for n, p in model.state_dict().items():
        oracle.assert_close(p, before[n], atol=1e-6, what=f"{n} after unmerge")
    oracle.assert_close(model(**inputs), with_adapter, atol=1e-5, what="unmerged logits")
    with pytest.raises(AdapterError, match="not merged"):
        lora.unmerge(model)
    lora.merge(model)
    lora.unload(model)  # unmerges, then puts the plain layers back
    assert not lora.lora_layers(model) and set(model.state_dict()) == set(minglm4v.load(folder).state_dict())
    oracle.assert_close(model(**inputs), minglm4v.load(folder)(**inputs), atol=1e-5, what="after unload")


def test_peft_loads_our_adapter_with_equal_logits(pair, tmp_path):
    from peft import PeftModel

    folder, _, _ = pair
    model = fresh(folder)
    files = adapters.save_adapter(model, tmp_path / "adapter")
    assert sorted(f.name for f in files) == ["adapter_config.json", "adapter_model.safetensors"]
    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.language_model.layers.0.mlp.gate_up_proj.lora_A.weight" in keys
    assert "base_model.model.model.visual.merger.proj.lora_B.weight" in keys
    hf = oracle.build_oracle(tiny(), seed=3)
    inputs, types = image_prompt()
    with torch.no_grad():
        base = hf(**inputs, mm_token_type_ids=types).logits
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        want = peft_model(**inputs, mm_token_type_ids=types).logits
        oracle.assert_close(model(**inputs), want, atol=ATOL, what="ours+adapter vs peft")
    assert not torch.allclose(want, base, atol=1e-2)  # the adapter really changed the oracle's logits
    # every adapted layer is a LoRA layer on the peft side too (nothing silently left out)
    peft_layers = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
                   if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) == 1}
    assert peft_layers == set(lora.lora_layers(model))


def test_we_load_peft_adapter_with_equal_logits(pair, tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    folder, _, _ = pair
    hf = oracle.build_oracle(tiny(), seed=3)
    cfg = PeftLoraConfig(r=3, lora_alpha=5, target_modules=["q_proj", "v_proj", "down_proj", "qkv"])
    peft_model = get_peft_model(hf, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    peft_model.save_pretrained(tmp_path / "from_peft")
    ours = minglm4v.load(folder)
    paths = adapters.load_adapter(ours, tmp_path / "from_peft")
    assert any(p.startswith("model.visual.merger") for p in paths)  # PEFT's suffix rule: merger.down_proj too
    assert any(p.endswith("attn.qkv") for p in paths)
    inputs, types = image_prompt(seed=8)
    with torch.no_grad():
        oracle.assert_close(ours(**inputs), peft_model.eval()(**inputs, mm_token_type_ids=types).logits,
                            atol=ATOL, what="ours+peft adapter vs peft")


@torch.no_grad()
def test_merged_checkpoint_loads_in_transformers(pair, tmp_path):
    import transformers

    folder, _, _ = pair
    model = fresh(folder)
    inputs, types = image_prompt()
    with_adapter = model(**inputs)
    lora.merge_and_unload(model)
    assert not lora.lora_layers(model)
    minglm4v.save(model, tmp_path / "merged")
    assert set(load_file(tmp_path / "merged" / "model.safetensors")) == set(load_file(folder / "model.safetensors"))
    hf = transformers.Glm4vForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    oracle.assert_close(hf(**inputs, mm_token_type_ids=types).logits, with_adapter, atol=ATOL, what="merged in HF")
    oracle.assert_close(minglm4v.load(tmp_path / "merged")(**inputs), with_adapter, atol=1e-5, what="merged, ours")


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_qlora_trains_only_the_adapter_and_merges_by_dequantizing(pair, scheme):
    """LoRA on quant.QuantLinear bases (chapter 10): the int8/int4 codes stay as they are, gradients flow through
    them to the adapters of earlier layers, and merge_and_unload dequantizes before adding B A."""
    from minglm4v.quant import QuantLinear, quantize_model

    folder, _, _ = pair
    model = minglm4v.load(folder)
    report = quantize_model(model, scheme, group_size=32)  # every decoder Linear and lm_head
    assert len(report.layers) == 6 * tiny().text_config.num_hidden_layers + 1
    paths = lora.add_lora(model, LoraConfig(r=4, alpha=8.0))
    assert all(isinstance(model.get_submodule(p).base, QuantLinear) for p in paths)
    with pytest.raises(AdapterError, match="quantized base"):
        lora.merge(model)
    params = lora.trainable(model)
    frozen = {n: t.clone() for n, t in model.state_dict().items() if "lora_" not in n}
    first_a = model.language_model.layers[0].self_attn.q_proj.lora_A.weight.detach().clone()
    opt = torch.optim.AdamW(params, lr=1e-2)
    inputs, _ = image_prompt()
    target = torch.randint(0, tiny().text_config.vocab_size, inputs["input_ids"].shape,
                           generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(**inputs).flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert not torch.equal(model.language_model.layers[0].self_attn.q_proj.lora_A.weight, first_a)  # reached
    for n, t in model.state_dict().items():
        if "lora_" not in n:
            assert torch.equal(t, frozen[n]), f"{n} changed: the base must stay frozen"
    with torch.no_grad():
        trained = model(**inputs)
        lora.merge_and_unload(model)
        assert isinstance(model.language_model.layers[0].self_attn.q_proj, nn.Linear)
        oracle.assert_close(model(**inputs), trained, atol=1e-4, what="merged QLoRA")


def test_bf16_base_keeps_a_float32_adapter(pair):
    folder, _, _ = pair
    model = minglm4v.load(folder, dtype=torch.bfloat16)
    lora.add_lora(model, LoraConfig(r=2))
    layer = model.language_model.layers[0].mlp.down_proj
    assert layer.base.weight.dtype == torch.bfloat16 and layer.lora_A.weight.dtype == torch.float32
    inputs, _ = image_prompt()
    assert model(**inputs).dtype == torch.bfloat16


def test_bad_settings_are_refused(pair):
    folder, _, _ = pair
    for kwargs, what in (({"r": 0}, "rank"), ({"alpha": -1.0}, "alpha"), ({"dropout": 1.0}, "dropout"),
                         ({"targets": ("q_proj", "lm_head")}, "lm_head"), ({"targets": "q_proj"}, "targets")):
        with pytest.raises(AdapterError, match=what):
            LoraConfig(**kwargs)
    with pytest.raises(AdapterError, match="no layer"):
        lora.add_lora(minglm4v.load(folder), LoraConfig(targets=()))
    model = minglm4v.load(folder)
    with pytest.raises(AdapterError, match="no LoRA layers"):
        lora.merge(model)
    lora.add_lora(model, LoraConfig(r=2))
    with pytest.raises(AdapterError, match="already has LoRA"):
        lora.add_lora(model, LoraConfig(r=2))
    with pytest.raises(AdapterError, match="in_features"):
        LoraLinear(nn.ReLU(), 2, 4.0)


def test_bad_adapter_folders_are_refused(pair, tmp_path):
    folder, _, _ = pair
    good = tmp_path / "good"
    adapters.save_adapter(fresh(folder, LoraConfig(r=2)), good)

    def broken(name, edit_config=None, edit_tensors=None):
        out = tmp_path / name
        out.mkdir()
        cfg = json.loads((good / "adapter_config.json").read_text())
        if edit_config:
            edit_config(cfg)
        (out / "adapter_config.json").write_text(json.dumps(cfg))
        tensors = load_file(good / "adapter_model.safetensors")
        if edit_tensors:
            edit_tensors(tensors)
        save_file(tensors, out / "adapter_model.safetensors")
        return out

    key = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
    cases = {
        "dora": (broken("dora", lambda c: c.update(use_dora=True)), "use_dora"),
        "ia3": (broken("ia3", lambda c: c.update(peft_type="IA3")), "peft_type"),
        "rank": (broken("rank", lambda c: c.update(r=3)), "shape"),
        "r_str": (broken("r_str", lambda c: c.update(r="2")), "'r' must be int"),
        "unknown": (broken("unknown", None, lambda t: t.update({key.replace("layers.0", "layers.9"): t[key].clone()})),
                    "1 unknown"),
        "missing": (broken("missing", None, lambda t: t.pop(key)), "1 missing"),
        "modules_to_save": (broken("mts", lambda c: c.update(modules_to_save=["lm_head"])), "modules_to_save"),
    }
    for name, (path, match) in cases.items():
        with pytest.raises(AdapterError, match=match):
            adapters.load_adapter(minglm4v.load(folder), path)
    with pytest.raises(AdapterError, match="not found"):
        adapters.load_adapter(minglm4v.load(folder), tmp_path / "nowhere")
    with pytest.raises(AdapterError, match="URL"):
        adapters.load_adapter(minglm4v.load(folder), "https://example.com/adapter")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    (tmp_path / "damaged" / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(AdapterError, match="safetensors"):
        adapters.load_adapter(minglm4v.load(folder), tmp_path / "damaged")
    merged = fresh(folder, LoraConfig(r=2))
    lora.merge(merged)
    with pytest.raises(AdapterError, match="unmerge"):
        adapters.save_adapter(merged, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_round_trip_of_our_own_files(pair, tmp_path):
    folder, _, _ = pair
    model = fresh(folder, LoraConfig(r=3, alpha=6.0, rslora=True, merger=True))
    adapters.save_adapter(model, tmp_path / "a")
    again = minglm4v.load(folder)
    assert adapters.load_adapter(again, tmp_path / "a") == list(lora.lora_layers(model))
    inputs, _ = image_prompt()
    with torch.no_grad():
        assert torch.equal(again(**inputs), model(**inputs))


# ---------------------------------------------------------------------------------------------- finetune.py

def _scene_files(folder, n=6, seed=0):
    """n TinyVQA questions with their scenes saved as PNG files in `folder`; JSONL lines with relative paths."""
    from minglm4v import tinyvqa

    lines = []
    for i, e in enumerate(tinyvqa.examples(seed, n)):
        e.image.save(folder / f"s{i}.png")
        conv = e.conversation(with_answer=True)
        conv[0]["content"][0] = {"type": "image", "image": f"s{i}.png"}
        lines.append(json.dumps({"messages": conv}))
    return lines


def test_labels_cover_the_answers_only_and_agree_with_tinyvqa():
    from minglm4v import finetune_data, tinyvqa, tinyvqa_eval

    _, processor = tinyvqa_eval.load()
    exs = tinyvqa.examples(3, 4)
    convs = [e.conversation(with_answer=True) for e in exs[:3]] + [tinyvqa.dialogue(exs[3:] + exs[:2])]
    ours = finetune_data.batch(processor, convs)
    theirs = tinyvqa.batch(processor, [exs[0], exs[1], exs[2]] + [[exs[3], exs[0], exs[1]]])  # chapter 08's labelling
    assert torch.equal(ours["labels"], theirs["labels"]) and torch.equal(ours["input_ids"], theirs["input_ids"])
    tok = processor.tokenizer
    for b, e in enumerate(exs[:3]):
        labelled = ours["labels"][b][ours["labels"][b] != -100].tolist()
        assert labelled == tok.encode(e.answer) + [tok.token_to_id("<|user|>")]
    assert (ours["labels"][3] != -100).sum() == sum(len(tok.encode(e.answer)) + 1 for e in (exs[3], exs[0], exs[1]))


def test_malformed_lines_name_their_line_and_the_problem(tmp_path):
    from minglm4v import finetune_data

    good = _scene_files(tmp_path, 3)
    user = {"role": "user", "content": [{"type": "image", "image": "s0.png"}, {"type": "text", "text": "Hi?"}]}
    cases = {
        "{not json": "not valid JSON",
        "[1, 2]": "JSON object with a 'messages' list",
        json.dumps({"conversation": []}): "without messages",
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}): "role 'robot'",
        json.dumps({"messages": [user]}): "no assistant turn",
        json.dumps({"messages": [{"role": "assistant", "content": "red"}, user]}): "starts with the assistant",
        json.dumps({"messages": [user, {"role": "assistant", "content": "  "}]}): "non-empty text",
        json.dumps({"messages": [{**user, "content": [{"type": "image", "image": "gone.png"}]},
                                 {"role": "assistant", "content": "red"}]}): "gone.png.*no such file",
        json.dumps({"messages": [{**user, "content": [{"type": "image", "image": "https://x.org/a.png"}]},
                                 {"role": "assistant", "content": "red"}]}): "URL",
        "": "empty line",
    }
    for k, (bad, problem) in enumerate(cases.items()):
        path = tmp_path / f"bad{k}.jsonl"
        path.write_text("\n".join(good[:2] + [bad] + good[2:]) + "\n")
        with pytest.raises(DatasetError, match=f"line 3: .*{problem}"):
            finetune_data.read_jsonl(path)
    ok = tmp_path / "ok.jsonl"
    ok.write_text("\n".join(good) + "\n")
    convs = finetune_data.read_jsonl(ok)
    assert len(convs) == 3 and convs[0][0]["content"][0]["image"] == str(tmp_path / "s0.png")
    with pytest.raises(DatasetError, match="not found"):
        finetune_data.read_jsonl(tmp_path / "nowhere.jsonl")


def test_split_is_seeded_and_disjoint():
    from minglm4v import finetune_data

    items = list(range(50))
    train, held = finetune_data.split(items, 0.1, seed=4)
    assert (len(train), len(held)) == (45, 5) and sorted(train + held) == items
    split = finetune_data.split
    assert split(items, 0.1, seed=4) == (train, held) and split(items, 0.1, seed=5) != (train, held)
    assert split(items, 0.0) == (split(items, 0.0)[0], []) and len(split(items[:3], 0.01)[1]) == 1
    with pytest.raises(DatasetError, match="held-out fraction"):
        finetune_data.split(items, 1.0)


def test_cli_writes_adapters_and_checkpoints_and_leaves_the_base_alone(tmp_path, capsys):
    from minglm4v import finetune, tinyvqa

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(_scene_files(tmp_path, 8)) + "\n")
    out = tmp_path / "adapter"
    args = ["--model", str(tinyvqa.CHECKPOINT), "--data", str(data), "--out", str(out), "--steps", "3",
            "--batch-size", "2", "--checkpoint-every", "2", "--rank", "2", "--held-out", "0.25"]
    assert finetune.main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # progress only on a terminal
    assert "trained 13,824 of" in captured.out and "held-out" in captured.out
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                               "training_log.json", "checkpoint-2"}
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["loss"]) == 3 and log["train_conversations"] == 6 and log["held_out_conversations"] == 2
    assert [s for s, _ in log["held_out_loss"]] == [2, 3]
    model = minglm4v.load(tinyvqa.CHECKPOINT)
    base = {n: t.clone() for n, t in model.state_dict().items()}
    adapters.load_adapter(model, out)
    lora.merge_and_unload(model)
    changed = [n for n, t in model.state_dict().items() if not torch.equal(t, base[n])]
    assert changed and all(n.split(".")[-2] in lora.TEXT_TARGETS for n in changed)
    assert finetune.main(args) == 2  # never overwrites an adapter
    assert "already holds an adapter" in capsys.readouterr().err
    data.write_text(data.read_text() + '{"messages": []}\n')
    assert finetune.main(args[:5] + [str(tmp_path / "other")] + args[6:]) == 2
    assert "line 9:" in capsys.readouterr().err


def test_progress_line_on_a_terminal_only():
    import io

    from minglm4v.finetune import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream, quiet in ((tty, False), (pipe, False)):
        p = Progress(10, quiet=quiet, stream=stream)
        p.update(4, 0.5)
        p.close()
    assert pipe.getvalue() == ""
    assert tty.getvalue().startswith("\rstep 5/10  loss 0.5000") and "ETA" in tty.getvalue()
    quiet = Tty()
    Progress(10, quiet=True, stream=quiet).update(1, 0.1)
    assert quiet.getvalue() == ""


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(pair):
    from minglm4v import finetune

    folder, _, _ = pair
    inputs, _ = image_prompt()
    inputs["labels"] = torch.roll(inputs["input_ids"], -1, 1)
    grads = []
    for checkpointed in (False, True):
        model = fresh(folder, LoraConfig(r=2))
        if checkpointed:
            assert finetune.checkpoint_layers(model) == tiny().text_config.num_hidden_layers
        loss = finetune.loss_of(model, inputs)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in lora.trainable(model)]))
        with torch.no_grad():  # generation (a cache) goes around the checkpoint
            gen = {k: v for k, v in inputs.items() if k != "labels"}
            assert model.generate(**gen, max_new_tokens=2, do_sample=False).shape[1] == 17 + 2
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        oracle.assert_close(b, a, atol=1e-7, what="gradient with checkpointing")


@torch.no_grad()
def test_shipped_adapter_in_peft_and_transformers_answers_like_ours():
    """data/tiny-glm4v-lora on transformers' load of data/tiny-glm4v through peft: the same logits as minglm4v with
    the adapter, on TinyVQA's new question forms; and the greedy answers are right."""
    import sys

    import transformers
    from peft import PeftModel

    from minglm4v import tinyvqa, tinyvqa_eval

    sys.path.insert(0, str(tinyvqa.CHECKPOINT.parent))
    import make_lora_data  # data/make_lora_data.py

    exs = make_lora_data.held_out(seed=31, per_kind=4)
    ours, processor = minglm4v.load(tinyvqa.CHECKPOINT), tinyvqa_eval.load()[1]
    adapters.load_adapter(ours, tinyvqa.CHECKPOINT.parent / "tiny-glm4v-lora")
    hf = transformers.Glm4vForConditionalGeneration.from_pretrained(tinyvqa.CHECKPOINT).eval()
    peft_model = PeftModel.from_pretrained(hf, tinyvqa.CHECKPOINT.parent / "tiny-glm4v-lora").eval()
    inputs = processor.apply_chat_template([e.conversation() for e in exs])
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == 9).long())  # 1 on image tokens
    real = inputs["attention_mask"].bool()  # left padding: compare the real positions
    oracle.assert_close(ours(**inputs)[real], peft_model(**inputs).logits[real],
                        atol=ATOL, what="shipped adapter: ours vs peft")
    assert tinyvqa_eval.answer_batch(ours, processor, exs) == [e.answer for e in exs]


def test_video_lines_are_read_and_labelled(tmp_path, data_dir):
    from minglm4v import finetune_data, tinyvqa_eval

    line = {"messages": [{"role": "user", "content": [{"type": "video", "video": str(data_dir / "shapes.mp4")},
                                                      {"type": "text", "text": "Which way does the red square move?"}]},
                         {"role": "assistant", "content": "right"}]}
    (tmp_path / "v.jsonl").write_text(json.dumps(line) + "\n")
    convs = finetune_data.read_jsonl(tmp_path / "v.jsonl")
    processor = tinyvqa_eval.load()[1]
    inputs = finetune_data.batch(processor, convs)
    assert "pixel_values_videos" in inputs and "pixel_values" not in inputs
    tok = processor.tokenizer
    assert inputs["labels"][inputs["labels"] != -100].tolist() == tok.encode("right") + [tok.token_to_id("<|user|>")]
    line["messages"][0]["content"][0]["video"] = "missing.mp4"
    (tmp_path / "v.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(DatasetError, match="line 1: .*video 'missing.mp4': no such file"):
        finetune_data.read_jsonl(tmp_path / "v.jsonl")
