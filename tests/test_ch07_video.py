"""Chapter 07: video in, text out (minglm4v/video.py and the video half of processor.py).

* which frames are kept, worked by hand from docs/glm41v.md §3.1 and against transformers' own `sample_frames`
  (called on metadata alone, so a 400 s clip needs no file);
* decoding mp4/H.264 and WebM/VP9 with PyAV, resizing under the shared pixel budget, pairs of frames per patch;
* prompt ids against transformers' `Glm4vProcessor` (its video expansion fed our pixels and its own frame indices);
* logits (1e-4) and greedy tokens of a tiny random model against the transformers oracle, for one and two videos;
* bad input: missing, non-video, truncated, corrupt and frameless files, frames without a rate, images with videos.

torchvision does not run beside this torch, so transformers' video *pixel* path cannot run: pixel parity is not
tested; the model is given the same `pixel_values_videos` on both sides (docs/glm41v.md §10).
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import oracle
import pytest
import torch
import torch.nn.functional as F

import minglm4v
from minglm4v import video, video_io
from minglm4v.chat import render_chat
from minglm4v.errors import ProcessorError
from minglm4v.patchify import IMAGE_MEAN, IMAGE_STD, unpatchify
from minglm4v.processor import VideoProcessorConfig, load_processor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
import make_video  # noqa: E402  (data/make_video.py: the clip's drawing and encoding)

ATOL = 1e-4  # float32 logits (the bound)
NEW = 12  # greedy tokens compared
MEASURED: dict[str, float] = {}  # case -> max abs logits diff (printed with -s)


def clip(n_frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8 random frames."""
    return np.random.default_rng(seed).integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8)


def ask(*videos, question="Which way does the ball move?"):
    items = [v if isinstance(v, dict) else {"type": "video", "video": v} for v in videos]
    return [{"role": "user", "content": items + [{"type": "text", "text": question}]}]


# ---------------------------------------------------------------------- which frames: by hand

@pytest.mark.parametrize("total, fps, indices, seconds", [
    # 10 s at 30 fps: 20 frames, every 15th; pairs start at 0, 1, ..., 9 s
    (300, 30, [15 * i for i in range(20)], list(range(10))),
    # 3.3 s at 24 fps = 79 frames (3.29 s): floor(6.58) = 6 frames, every 12th
    (79, 24, [0, 12, 24, 36, 48, 60], [0, 1, 2]),
    # 7 s at 12.5 fps = 87 frames (6.96 s): 13 frames at ceil(6.25 i), odd -> the last repeated
    (87, 12.5, [0, 7, 13, 19, 25, 32, 38, 44, 50, 57, 63, 69, 75, 75], [0, 1, 2, 3, 4, 5, 6]),
    # 2 frames at 30 fps: one frame (at least one), repeated to make a pair
    (2, 30, [0, 0], [0]),
    (1, 25, [0, 0], [0]),
    # 2 s at 3 fps: ceil(1.5 i) = 0, 2, 3, 5 -> pairs start at frames 0 and 3 -> 0 s and 1 s
    (6, 3, [0, 2, 3, 5], [0, 1]),
    # 1 s at 2.5 fps (3 frames, 1.2 s): n = 2, ceil(1.25 i) = 0, 2
    (3, 2.5, [0, 2], [0]),
    # 400 s at 1 fps: longer than 300 s, but 400 frames <= 600: every frame
    (400, 1, list(range(400)), list(range(0, 400, 2))),
])
def test_sampling_by_hand(total, fps, indices, seconds):
    got = video.sample_indices(total, fps)
    assert got == indices
    assert [int(s) for s in video.patch_timestamps(got, fps)] == seconds


def test_long_clip_by_hand():
    """400 s at 30 fps = 12 000 frames: 600 frames at 600 evenly spaced times 0 .. 400 s (step 400/599 s)."""
    idx = video.sample_indices(12000, 30)
    assert len(idx) == 600 == len(set(idx))
    # i * 400/599 s * 30 fps, rounded up: 0, 20.03 -> 21, 40.07 -> 41, ..., 11979.97 -> 11980, 12000 -> last frame
    assert idx[:4] == [0, 21, 41, 61] and idx[-2:] == [11980, 11999]
    secs = [int(s) for s in video.patch_timestamps(idx, 30)]
    assert len(secs) == 300 and secs[:4] == [0, 1, 2, 4] and secs[-1] == 399  # 4.0067 s -> 4; 399.33 s -> 399


def transformers_indices(total: int, fps: float) -> list[int]:
    """transformers' Glm4vVideoProcessor.sample_frames on metadata alone (its constructor needs torchvision, the
    method only reads fps and max_duration), with duration = frames / fps as its decoders record it."""
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor
    from transformers.video_utils import VideoMetadata

    stub = types.SimpleNamespace(fps=2, max_duration=300)
    meta = VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps)
    return Glm4vVideoProcessor.sample_frames(stub, meta).tolist()


@pytest.mark.parametrize("seconds, fps", [(1, 30), (4.5, 24), (10, 29.97002997), (59.9, 60), (299.9, 25),
                                          (300, 30), (300.5, 30), (400, 12.5), (3600, 29.97), (45, 0.5),
                                          (0.2, 30), (7, 12.5), (3.3, 24), (900, 1)])
def test_sampling_matches_transformers(seconds, fps):
    total = max(1, round(seconds * fps))
    assert video.sample_indices(total, fps) == transformers_indices(total, fps)


def test_sampling_bad_metadata():
    with pytest.raises(video.VideoError, match="at least one frame"):
        video.sample_indices(0, 30)
    with pytest.raises(video.VideoError, match="positive number"):
        video.sample_indices(10, 0)


# ---------------------------------------------------------------------- sizes: the shared pixel budget

@pytest.mark.parametrize("frames, hw, size, tokens_per_pair", [
    (20, (720, 1280), (728, 1288), 1196),  # docs/glm41v.md §3.2
    (60, (720, 1280), (644, 1176), 966),
    (600, (1080, 1920), (196, 364), 91),
    (12, (144, 192), (140, 196), 35),  # data/shapes.mp4
])
def test_video_size_by_hand(frames, hw, size, tokens_per_pair):
    h, w = video.video_size(frames, *hw)
    assert (h, w) == size
    assert (h // 28) * (w // 28) == tokens_per_pair


# ---------------------------------------------------------------------- decoding

@pytest.fixture(scope="module")
def webm(tmp_path_factory):
    """The chapter's clip again, as WebM/VP9 (the container records no frame count)."""
    return make_video.write(tmp_path_factory.mktemp("webm") / "shapes.webm", "libvpx-vp9")


def test_probe_mp4_and_webm(data_dir, webm):
    import av

    want = video_io.VideoInfo(fps=12.0, total_frames=72, height=144, width=192)
    assert video_io.probe(data_dir / "shapes.mp4") == want
    with av.open(str(webm)) as c:
        assert c.streams.video[0].frames == 0  # WebM does not say: counted by decoding
    assert video_io.probe(webm) == video_io.VideoInfo(fps=12.0, total_frames=72, height=144, width=192)


def test_decoded_frames_are_the_drawn_frames(data_dir, webm):
    mp4, vp9 = video.load_video(data_dir / "shapes.mp4"), video.load_video(webm)
    assert mp4.indices == vp9.indices == list(range(0, 72, 6))
    assert mp4.timestamps == [i / 2 for i in range(12)]
    drawn = np.stack([make_video.frame(i) for i in mp4.indices]).astype(np.int16)
    for v in (mp4, vp9):  # lossy codecs: close to the drawing, not equal
        assert v.frames.shape == (12, 144, 192, 3) and v.frames.dtype == np.uint8
        assert np.abs(v.frames.astype(np.int16) - drawn).mean() < 4


def test_frames_list_and_file_agree(data_dir):
    """All 72 decoded frames handed over with their fps give the file's sample, pixels and grid."""
    every = video_io.read_frames(data_dir / "shapes.mp4", range(72))
    a = video.preprocess_videos([data_dir / "shapes.mp4"])
    b = video.preprocess_videos([video.from_frames(list(every), fps=12)])  # a list of (H, W, 3) frames
    assert a.frame_indices == b.frame_indices == [list(range(0, 72, 6))]
    assert a.timestamps == b.timestamps == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]
    assert a.video_grid_thw.tolist() == b.video_grid_thw.tolist() == [[6, 10, 14]]
    assert torch.equal(a.pixel_values_videos, b.pixel_values_videos)  # frame-by-frame resize == batched resize


def test_resize_and_normalise():
    frames = clip(4, 50, 70, seed=1)
    got = video_io.resize_frames(frames, 28, 56)  # (T, 3, h, w) uint8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    # torchvision's CPU path for uint8 + BICUBIC: torch's native uint8 kernel (not float-then-round)
    want = F.interpolate(x, size=(28, 56), mode="bicubic", align_corners=False, antialias=True)
    assert want.dtype == torch.uint8 and torch.equal(got, want)
    via_float = F.interpolate(x.float(), size=(28, 56), mode="bicubic", align_corners=False, antialias=True)
    assert not torch.equal(got, via_float.round().clamp(0, 255).to(torch.uint8))  # the two paths really differ
    flat = np.full((2, 40, 40, 3), 77, np.uint8)
    assert torch.equal(video_io.resize_frames(flat, 28, 28), torch.full((2, 3, 28, 28), 77, dtype=torch.uint8))
    norm = video.normalize_frames(got)
    m, s = torch.tensor(IMAGE_MEAN) * 255, torch.tensor(IMAGE_STD) * 255
    assert torch.equal(norm, (got.float() - m.view(1, 3, 1, 1)) / s.view(1, 3, 1, 1))


def test_temporal_patches_hold_consecutive_pairs():
    """Patch k's rows hold frames 2k and 2k+1 (channel, time, y, x); unpatchify gives the resized frames back."""
    v = video.from_frames(clip(9, 56, 84, seed=2), fps=4)  # 2.25 s at 4 fps: frames 0, 2, 4, 6 -> 2 patches
    assert v.indices == [0, 2, 4, 6]
    out = video.preprocess_videos([v])
    assert out.video_grid_thw.tolist() == [[2, 4, 6]] and out.pixel_values_videos.shape == (48, 1176)
    back = unpatchify(out.pixel_values_videos, [2, 4, 6])  # (4, 56, 84, 3) uint8
    assert np.array_equal(back, video_io.resize_frames(v.frames, 56, 84).permute(0, 2, 3, 1).numpy())
    row = out.pixel_values_videos[24].view(3, 2, 14, 14)  # first row of patch 1: frames 2 and 3 of the sample
    assert not torch.equal(row[:, 0], row[:, 1])


def test_frame_blocks_text():
    assert video.frame_blocks_text([2, 2, 4], [0.4, 1.9]) == ("<|begin_of_image|><|image|><|image|><|end_of_image|>0"
                                                         "<|begin_of_image|><|image|><|image|><|end_of_image|>1")
    with pytest.raises(video.VideoError, match="one per temporal patch"):
        video.frame_blocks_text([2, 2, 4], [0.0])


# ---------------------------------------------------------------------- prompts vs transformers' Glm4vProcessor

class FakeVideoProcessor:
    """Stands in for Glm4vVideoProcessor (which needs torchvision): returns given pixels and grids, with metadata
    whose frame indices come from transformers' own sampler, so the prompt's timestamps are transformers' too."""
    merge_size = 2

    def __init__(self, inputs, clips):
        from transformers.video_utils import VideoMetadata

        self.out = {"pixel_values_videos": inputs["pixel_values_videos"], "video_grid_thw": inputs["video_grid_thw"],
                    "video_metadata": []}
        for total, fps in clips:
            meta = VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps)
            meta.frames_indices = transformers_indices(total, fps)
            self.out["video_metadata"].append(meta)

    def __call__(self, videos, **kwargs):
        import transformers

        return transformers.BatchFeature(dict(self.out))


def hf_processor(folder, inputs, clips):
    import transformers

    class VideoProcessor(transformers.Glm4vProcessor):
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    return VideoProcessor(image_processor=transformers.Glm4vImageProcessorPil(),
                          tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
                          video_processor=FakeVideoProcessor(inputs, clips))


def hf_ids(folder, convs, inputs, clips):
    """transformers' input_ids, attention_mask and mm_token_type_ids for the same conversations."""
    hf = hf_processor(folder, inputs, clips)
    dummies = [np.zeros((2, 28, 28, 3), np.uint8) for _ in clips]  # only counted; the fake returns our pixels
    with warnings.catch_warnings():  # a numpy-2 copy-keyword notice from inside transformers
        warnings.simplefilter("ignore", DeprecationWarning)
        return hf(text=[render_chat(c) for c in convs], videos=dummies, padding=True, padding_side="left",
                  return_tensors="pt")


CLIP_A = (clip(40, 56, 84, seed=3), 12.0)  # 3.33 s: 6 frames, 3 patches at 0, 1, 2 s
CLIP_B = (clip(53, 60, 60, seed=4), 7.5)  # 7.07 s: 14 frames, 7 patches at 0 .. 6 s


def frames_item(c):
    return {"type": "video", "video": c[0], "fps": c[1]}


CASES = {  # name -> (conversations, (frame count, fps) of each video in reading order)
    "one_video_file": ([ask("SHAPES")], [(72, 12.0)]),
    "two_videos": ([ask(frames_item(CLIP_A), frames_item(CLIP_B), question="How many shapes are there?")],
                   [(40, 12.0), (53, 7.5)]),
    "batch": ([ask(frames_item(CLIP_B), question="Hi"), ask("SHAPES", frames_item(CLIP_A))],
              [(53, 7.5), (72, 12.0), (40, 12.0)]),
}


def conversations(case, data_dir):
    convs, clips = CASES[case]
    path = str(data_dir / "shapes.mp4")
    fix = [[{**m, "content": [({"type": "video", "video": path} if isinstance(it.get("video"), str) else it)
                              for it in m["content"]]} for m in c] for c in convs]
    return fix, clips


@pytest.mark.parametrize("case", list(CASES))
def test_ids_match_transformers(tiny_processor_dir, data_dir, case):
    proc = load_processor(tiny_processor_dir)
    convs, clips = conversations(case, data_dir)
    ours = proc.apply_chat_template(convs if len(convs) > 1 else convs[0])
    ref = hf_ids(tiny_processor_dir, convs, ours, clips)
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == ref["attention_mask"].tolist()
    assert ours["mm_token_type_ids"].tolist() == ref["mm_token_type_ids"].tolist()  # 2 on every frame placeholder
    assert set(ours) == {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw"}
    n = int(ours["video_grid_thw"].prod(-1).sum()) // 4
    assert int((ours["input_ids"] == proc.image_token_id).sum()) == n  # frames use the IMAGE id
    assert int((ours["input_ids"] == proc.video_token_id).sum()) == 0  # <|video|> never reaches the model


def test_each_video_keeps_its_own_timestamps(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    ids = proc.apply_chat_template(ask(frames_item(CLIP_A), frames_item(CLIP_B), question="?"))["input_ids"][0]
    text = proc.decode(ids, skip_special_tokens=True)
    assert text == "\n" + "012" + "0123456" + "?\n"  # 3 patches at 0-2 s, then 7 patches at 0-6 s
    assert proc.decode(ids, skip_special_tokens=False).count("<|begin_of_image|>") == 3 + 7


def test_position_ids_of_a_video_prompt_by_hand(tiny_processor_dir, tiny_config):
    """docs/glm41v.md §6.2: each temporal patch is a block (st, st + row, st + col); text resumes at
    st + max(h', w')."""
    from minglm4v.mrope import get_rope_index

    proc = load_processor(tiny_processor_dir)
    v = video.from_frames(clip(8, 56, 56, seed=5), fps=4)  # 2 s: frames 0, 2, 4, 6 -> 2 patches of 2 x 2 merged
    inputs = proc.apply_chat_template([{"role": "user", "content": [{"type": "video", "video": v}]}])
    ids = inputs["input_ids"]
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]
    tok = proc.tokenizer
    head = tok.encode("[gMASK]<sop><|user|>\n<|begin_of_video|>")
    assert len(head) == 5 and len(tok.encode("0")) == len(tok.encode("1")) == 1
    assert ids[0].tolist() == head + [7, 9, 9, 9, 9, 8] + tok.encode("0") + [7, 9, 9, 9, 9, 8] + tok.encode("1") + \
        tok.encode("<|end_of_video|><|assistant|>\n")
    pos, delta = get_rope_index(ids, tiny_config, video_grid_thw=inputs["video_grid_thw"])
    #        text 0-4, <boi>  patch 0 (st 6)   <eoi> "0" <boi>  patch 1 (st 11)      <eoi> "1" <eov> <ass> \n
    t = [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 8, 9, 10, 11, 11, 11, 11, 13, 14, 15, 16, 17]
    h = [0, 1, 2, 3, 4, 5, 6, 6, 7, 7, 8, 9, 10, 11, 11, 12, 12, 13, 14, 15, 16, 17]
    w = [0, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 10, 11, 12, 11, 12, 13, 14, 15, 16, 17]
    assert pos[:, 0].tolist() == [t, h, w]
    assert int(delta) == 18 - 22  # max position + 1 - length


# ---------------------------------------------------------------------- logits and greedy tokens vs the oracle

@pytest.fixture(scope="module")
def model_pair(tiny_checkpoint):
    folder, hf = tiny_checkpoint
    return minglm4v.load(folder), hf


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_logits_match_transformers(model_pair, tiny_processor_dir, data_dir, case):
    ours, hf = model_pair
    proc = load_processor(tiny_processor_dir)
    convs, clips = conversations(case, data_dir)
    inputs = proc.apply_chat_template(convs)
    types_ = hf_ids(tiny_processor_dir, convs, inputs, clips)["mm_token_type_ids"]
    got = ours(**inputs)
    want = hf(**{**inputs, "mm_token_type_ids": types_}).logits
    mask = inputs["attention_mask"].bool()
    MEASURED[case] = oracle.assert_close(got[mask], want[mask], atol=ATOL, what=f"{case} logits")


@pytest.mark.parametrize("case", ["one_video_file", "two_videos"])
@torch.no_grad()
def test_greedy_tokens_match_transformers(model_pair, tiny_processor_dir, data_dir, case):
    ours, hf = model_pair
    proc = load_processor(tiny_processor_dir)
    convs, clips = conversations(case, data_dir)
    inputs = proc.apply_chat_template(convs)
    types_ = hf_ids(tiny_processor_dir, convs, inputs, clips)["mm_token_type_ids"]
    kw = dict(max_new_tokens=NEW, eos_token_id=[999], pad_token_id=0)  # a stop id that never wins: all 12 compared
    got = ours.generate(**inputs, **kw)
    want = hf.generate(**{**inputs, "mm_token_type_ids": types_}, do_sample=False, **kw)
    assert got.tolist() == want.tolist()
    assert got.shape[1] == inputs["input_ids"].shape[1] + NEW


def test_report_measured(capsys):
    with capsys.disabled():
        for case, diff in MEASURED.items():
            print(f"\n  video logits {case}: max abs diff {diff:.2e}")


# ---------------------------------------------------------------------- processor settings

def test_video_config_file(tmp_path, tiny_processor_dir):
    published = {"size": {"shortest_edge": 12544, "longest_edge": 47040000}, "do_rescale": True, "patch_size": 14,
                 "temporal_patch_size": 2, "merge_size": 2,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                 "video_processor_type": "Glm4vVideoProcessor", "processor_class": "Glm4vProcessor"}
    f = tmp_path / "video_preprocessor_config.json"
    f.write_text(json.dumps(published))
    cfg = VideoProcessorConfig.from_file(f)
    assert cfg == VideoProcessorConfig() and (cfg.fps, cfg.max_duration) == (2.0, 300.0)
    f.write_text(json.dumps({"do_sample_frames": False}))
    with pytest.raises(ProcessorError, match="do_sample_frames=False is not supported"):
        VideoProcessorConfig.from_file(f)
    f.write_text(json.dumps({"frame_stride": 3}))
    with pytest.raises(ProcessorError, match="unknown key 'frame_stride'"):
        VideoProcessorConfig.from_file(f)
    # save_pretrained writes it; a folder without it gets the published settings
    saved = json.loads((tiny_processor_dir / "video_preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": 12544, "longest_edge": 47040000} and saved["fps"] == 2.0
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_processor_dir / name).read_bytes())
    f.unlink()
    assert load_processor(tmp_path).video_config == VideoProcessorConfig()


def test_settings_change_the_sampling(tiny_processor_dir, tmp_path, data_dir):
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_processor_dir / name).read_bytes())
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"fps": 1, "max_duration": 4}))
    proc = load_processor(tmp_path)
    out = proc.preprocess_videos([data_dir / "shapes.mp4"])  # 6 s > 4 s: 4 frames evenly over 0..6 s
    assert out.frame_indices == [[0, 24, 48, 71]] and out.video_grid_thw[0, 0] == 2


# ---------------------------------------------------------------------- bad input

def test_bad_files(tmp_path, data_dir):
    with pytest.raises(video.VideoError, match="not found"):
        video_io.probe(tmp_path / "nope.mp4")
    (tmp_path / "notes.mp4").write_text("hello, not a video\n" * 20)
    with pytest.raises(video.VideoError, match="cannot open .*notes.mp4 as a video"):
        video.load_video(tmp_path / "notes.mp4")
    data = (data_dir / "shapes.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])  # index at the end: cannot even open
    with pytest.raises(video.VideoError, match="cut.mp4"):
        video.load_video(tmp_path / "cut.mp4")
    noisy = bytearray(data)
    noisy[2000:8000] = np.random.default_rng(0).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    (tmp_path / "noisy.mp4").write_bytes(bytes(noisy))
    with pytest.raises(video.VideoError, match="noisy.mp4: the video stream is corrupt after"):
        video.load_video(tmp_path / "noisy.mp4")
    with pytest.raises(video.VideoError, match="not found"):
        video.preprocess_videos([tmp_path / "gone.webm"])


def test_frameless_and_streamless_files(tmp_path):
    import av

    full = make_video.write(tmp_path / "short.webm", "libvpx-vp9", width=64, height=48, seconds=1).read_bytes()
    cluster = full.find(bytes.fromhex("1F43B675"))  # the first block of frames: keep the header only
    (tmp_path / "empty.webm").write_bytes(full[:cluster + 8])
    with pytest.raises(video.VideoError, match="empty.webm: the video stream has no frames"):
        video_io.probe(tmp_path / "empty.webm")
    with av.open(str(tmp_path / "sound.mp4"), "w") as out:  # audio only
        s = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*s.encode(frame), *s.encode()]:
            out.mux(packet)
    with pytest.raises(video.VideoError, match="no video stream .*'audio'"):
        video_io.probe(tmp_path / "sound.mp4")


def test_truncated_stream_with_index_up_front(tmp_path):
    """An mp4 written with its index first ('faststart') opens when cut short; the missing frames are reported."""
    from fractions import Fraction

    import av

    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=Fraction(12))
        s.width, s.height, s.pix_fmt = 96, 72, "yuv420p"
        for i in range(72):
            for packet in s.encode(av.VideoFrame.from_ndarray(make_video.frame(i, 96, 72), format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    data = path.read_bytes()
    (tmp_path / "fs_cut.mp4").write_bytes(data[:len(data) * 2 // 3])
    assert video_io.probe(tmp_path / "fs_cut.mp4").total_frames == 72  # the index still says 72
    with pytest.raises(video.VideoError, match="fs_cut.mp4: .*(corrupt|could not be decoded)"):
        video.load_video(tmp_path / "fs_cut.mp4")


def test_bad_video_items(tiny_processor_dir, data_dir):
    proc = load_processor(tiny_processor_dir)
    with pytest.raises(video.VideoError, match="needs their frame rate"):
        proc.apply_chat_template(ask(clip(4, 30, 30, 0)))
    with pytest.raises(video.VideoError, match="share one size"):
        proc.apply_chat_template(ask({"type": "video", "video": [clip(1, 30, 30, 0)[0], clip(1, 40, 30, 0)[0]],
                                      "fps": 2}))
    with pytest.raises(video.VideoError, match="does not download"):
        proc.apply_chat_template(ask("https://example.com/a.mp4"))
    with pytest.raises(video.VideoError, match="video item holds a int"):
        proc.apply_chat_template(ask({"type": "video", "video": 3}))
    with pytest.raises(video.VideoError, match=r"\(T, H, W, 3\) uint8"):
        video.from_frames(np.zeros((4, 30, 30, 3), np.float32), fps=2)


def test_images_and_videos_together_are_refused(tiny_processor_dir, data_dir):
    proc = load_processor(tiny_processor_dir)
    image = {"type": "image", "image": clip(1, 40, 40, 0)[0]}
    with pytest.raises(ProcessorError, match="both images and videos"):
        proc.apply_chat_template(ask(image, frames_item(CLIP_A)))
    with pytest.raises(ProcessorError, match="both images and videos"):  # in one batch, too
        proc.apply_chat_template([ask(image), ask(frames_item(CLIP_A))])


def test_placeholder_count_must_match_videos(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    with pytest.raises(ProcessorError, match="2 <\\|video\\|> placeholders but 1 videos"):
        proc.apply_chat_template(ask(frames_item(CLIP_A), question="and <|video|> again"), special_tokens_in_text=True)
