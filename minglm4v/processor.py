"""Messages -> model inputs: the chat format, the tokenizer and the image and video preprocessors together.

Mirrors transformers' `Glm4vProcessor` (`apply_chat_template(..., tokenize=True, return_dict=True,
return_tensors="pt")`, and `processor(text=..., images=..., videos=...)` on an already formatted prompt):

    messages --chat.render_chat--> "[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|><|end_of_image|>What...?"
             --tokenizer--> ids with one <|image|> per image and one <|video|> per video
             --expand--> each <|image|> repeated t*h*w/m^2 times (its image's token count, docs/glm41v.md §2.4);
                         each <|video|> replaced, per temporal patch k, by
                         <|begin_of_image|> <|image|> x h*w/m^2 <|end_of_image|> "{seconds of patch k}" (§3.3)
    images   --patchify.preprocess--> pixel_values (N, 1176), image_grid_thw (n, 3)
    videos   --video.preprocess_videos--> pixel_values_videos (N', 1176), video_grid_thw (n', 3)

The result is a `batch.BatchFeature` with transformers' keys: input_ids, attention_mask, mm_token_type_ids (B, L)
(0 text, 1 image placeholder, 2 video-frame placeholder), then the pixel and grid keys. A list of conversations gives
a left-padded batch. Special-token strings typed in message text are tokenized as plain text (README). Images and
videos in one request are refused: GLM-4.1V gives both the same placeholder id (docs/glm41v.md §5).
Shapes: B conversations, L longest prompt, N patch rows, n images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import chat, video
from .batch import BatchFeature
from .errors import ProcessorError
from .message_media import image_from, video_from
from .patchify import num_image_tokens, preprocess
from .paths import local_path
from .processor_config import ImageProcessorConfig, VideoProcessorConfig, read_chat_template, write_settings
from .processor_options import CALL_KEYWORDS, CHAT_KEYWORDS, Options, parse
from .prompt_ids import expand_placeholders, left_pad, token_types
from .tokenizer import Tokenizer

KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw", "pixel_values_videos",
        "video_grid_thw")


class Processor:
    """`processor.apply_chat_template(messages)` -> a BatchFeature ready for `model.generate(**inputs)`."""

    def __init__(self, tokenizer: Tokenizer, image_config: ImageProcessorConfig | None = None,
                 chat_template: str | None = None, video_config: VideoProcessorConfig | None = None,
                 template_source: str = "chat_template.jinja"):
        self.tokenizer = tokenizer
        self.image_config = image_config or ImageProcessorConfig()
        self.video_config = video_config or VideoProcessorConfig.matching(self.image_config)
        # None or GLM-4.1V's own template: the Python renderer (chat.py); any other template: rendered by jinja2
        self.chat_template = None if chat_template is None or chat.template_is_glm41v(chat_template) \
            else chat_template
        self.template_source = template_source  # named in template errors
        self.image_token_id = tokenizer.token_to_id("<|image|>")
        self.video_token_id = tokenizer.token_to_id("<|video|>")
        self.pad_token_id = tokenizer.token_to_id("<|endoftext|>")
        self.video_start_id = tokenizer.token_to_id("<|begin_of_video|>")
        self.video_end_id = tokenizer.token_to_id("<|end_of_video|>")
        for token in ("<|begin_of_image|>", "<|end_of_image|>"):
            tokenizer.token_to_id(token)  # the prompt format needs them: fail now, not halfway through a prompt

    @classmethod
    def from_pretrained(cls, folder) -> "Processor":
        folder = local_path(folder, "processor folder", ProcessorError)
        if not folder.is_dir():
            state = "is a file, not a folder" if folder.exists() else "not found"
            raise ProcessorError(f"processor folder {folder} {state}")
        pre = folder / "preprocessor_config.json"
        if not pre.is_file():
            raise ProcessorError(f"{pre} not found: a checkpoint folder must contain preprocessor_config.json "
                                 "(the image preprocessing settings)")
        image_config = ImageProcessorConfig.from_file(pre)
        vpre = folder / "video_preprocessor_config.json"  # absent: published video settings (see `matching`)
        video_config = VideoProcessorConfig.from_file(vpre) if vpre.is_file() else None
        where = folder / "chat_template.jinja"
        return cls(Tokenizer.from_pretrained(folder), image_config, read_chat_template(folder), video_config,
                   str(where if where.is_file() else folder / "tokenizer_config.json"))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save(folder)
        write_settings(folder, self.image_config, self.video_config)
        if self.chat_template is not None:
            (folder / "chat_template.jinja").write_text(self.chat_template)

    # ------------------------------------------------------------------ checks where processor and model meet

    def check_model(self, config) -> None:
        """Refuse a model whose vocabulary or special ids do not fit this tokenizer (`config`: a Glm4vConfig).
        Call it where a processor and a model are first used together (the CLI and pipeline do)."""
        vocab = config.text_config.vocab_size
        where = f"the tokenizer ({self.tokenizer.source})"
        if self.tokenizer.max_id >= vocab:
            raise ProcessorError(f"{where} produces ids up to {self.tokenizer.max_id}, but the model embeds only "
                                 f"{vocab} (text_config.vocab_size): they were not made together. Load the processor "
                                 "from the model's own checkpoint folder")
        tokens = {"image_token_id": "<|image|>", "video_token_id": "<|video|>",
                  "image_start_token_id": "<|begin_of_image|>", "image_end_token_id": "<|end_of_image|>",
                  "video_start_token_id": "<|begin_of_video|>", "video_end_token_id": "<|end_of_video|>"}
        wrong = {f: (getattr(config, f), tokens[f], self.tokenizer.token_to_id(tokens[f])) for f in tokens
                 if getattr(config, f) != self.tokenizer.token_to_id(tokens[f])}
        if wrong:
            shown = "; ".join(f"config {f}={c}, tokenizer {t}={i}" for f, (c, t, i) in wrong.items())
            raise ProcessorError(f"{where} and the model disagree on special ids ({shown}); load both from one "
                                 "checkpoint folder")
        self.check_stop_ids(list(config.text_config.eos_token_id))

    def check_stop_ids(self, ids) -> list[int]:
        """Stop ids must be tokens of this tokenizer (a config from another model would never stop)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        missing = [i for i in ids if self.tokenizer.id_to_token(i) is None]
        if missing:
            raise ProcessorError(f"stop ids {missing} are not in the tokenizer ({self.tokenizer.source}, "
                                 f"{self.tokenizer.vocab_size} tokens); check eos_token_id in config.json or pass "
                                 "eos_token_id= explicitly")
        return ids

    # ------------------------------------------------------------------ text

    def render(self, messages, add_generation_prompt: bool = True, chat_template: str | None = None) -> str:
        """The prompt text of one conversation, as the chat template writes it."""
        return chat.unmark(self._render(messages, add_generation_prompt, chat_template))

    def _render(self, messages, add_generation_prompt: bool, chat_template: str | None) -> str:
        template = chat_template if chat_template is not None else self.chat_template
        if template is None or chat.template_is_glm41v(template):
            return chat.render_chat(messages, add_generation_prompt)
        where = self.template_source if chat_template is None else "the chat_template argument"
        return chat.render_with_template(template, messages, add_generation_prompt, where)

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Text of one sequence of ids; transformers' defaults (special tokens kept). `clean_up_tokenization_spaces`
        is accepted as transformers does for this byte-level BPE tokenizer: never applied (True warns)."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        if isinstance(sequences, (torch.Tensor, np.ndarray)) and sequences.ndim != 2:
            raise ProcessorError(f"batch_decode() takes a (B, L) batch of ids, got {sequences.ndim} dimension(s); "
                                 "use decode() for one sequence")
        return [self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences]

    # ------------------------------------------------------------------ the whole thing

    def apply_chat_template(self, conversation, **kwargs):
        """One conversation (a list of messages) or a list of them -> a BatchFeature of input_ids, attention_mask,
        mm_token_type_ids (B, L) and, with images, pixel_values (N, 1176) and image_grid_thw (n, 3), or, with videos,
        pixel_values_videos and video_grid_thw. Keywords: see processor_options (transformers' names). With
        tokenize=False: the prompt text (a list of texts for a batch)."""
        opts = parse(kwargs, CHAT_KEYWORDS, "apply_chat_template()")
        batched = _is_batch(conversation)
        batch = [list(c) for c in conversation] if batched else [conversation]
        for conv in batch:
            chat.check_messages(conv)
        if not opts.tokenize:
            texts = [self.render(c, opts.add_generation_prompt, opts.chat_template) for c in batch]
            return texts if batched else texts[0]
        tokens = [] if opts.special_tokens_in_text else self.tokenizer.special_tokens()
        texts, images, videos = [], [], []
        for conv in batch:
            texts.append(self._render(chat.mark_plain_text(conv, tokens), opts.add_generation_prompt,
                                      opts.chat_template))
            items = [item for msg in conv if isinstance(msg["content"], (list, tuple)) for item in msg["content"]]
            images.append([item for item in items if chat.item_kind(item) == "image"])
            videos.append([item for item in items if chat.item_kind(item) == "video"])
        c = self.video_config
        flat_images = [image_from(chat.media_source(it), opts.allow_download) for ims in images for it in ims]
        flat_videos = [video_from(chat.media_source(it), it.get("fps"), c.fps, c.max_duration) for vids in videos
                       for it in vids]
        out = self._inputs([self._ids(chat.split_marked(t)) for t in texts], flat_images, flat_videos, opts)
        return out if opts.return_dict else out["input_ids"]

    def __call__(self, text=None, images=None, videos=None, **kwargs) -> BatchFeature:
        """transformers' `processor(text=..., images=..., videos=...)`: `text` (a prompt or a list of prompts) is
        already in the chat format, its special-token strings are special ids, and its <|image|> / <|video|>
        placeholders take the images / videos in order (each a path, file:// URL, PIL image, array or tensor; a
        video as frames needs `{"video": frames, "fps": ...}`)."""
        opts = parse(kwargs, CALL_KEYWORDS, "processor()")
        if text is None:
            raise ProcessorError("processor() needs text=: the prompt(s) with one <|image|> / <|video|> placeholder "
                                 "per image / video (apply_chat_template writes them from messages)")
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ProcessorError(f"processor(text=...) takes a string or a non-empty list of strings, got "
                                 f"{type(text).__name__}")
        c = self.video_config
        flat_images = [image_from(im, opts.allow_download) for im in _flatten(images)]
        flat_videos = [video_from(v.get("video", v.get("path")), v.get("fps"), c.fps, c.max_duration)
                       if isinstance(v, dict) else video_from(v, None, c.fps, c.max_duration)
                       for v in ([] if videos is None else list(videos) if isinstance(videos, list) else [videos])]
        return self._inputs([self.tokenizer.encode(t) for t in texts], flat_images, flat_videos, opts)

    def _ids(self, pieces: list[tuple[str, bool]]) -> list[int]:
        """Token ids of a marked prompt: the format's own text with special tokens, typed ones as plain text."""
        return [i for piece, plain in pieces for i in self.tokenizer.encode(piece, special_tokens=not plain)]

    def _inputs(self, rows: list[list[int]], images: list, videos: list, opts: Options) -> BatchFeature:
        if images and videos:
            raise ProcessorError("this request holds both images and videos; GLM-4.1V cannot take them together "
                                 "(a video's frames use the same <|image|> placeholder id as an image, and the "
                                 "reference model mixes up their features). Send images and videos in separate "
                                 "requests")
        out: dict[str, torch.Tensor] = {}
        counts: list[int] = []
        if images:
            c = self.image_config
            out["pixel_values"], out["image_grid_thw"] = preprocess(
                images, min_pixels=c.min_pixels, max_pixels=c.max_pixels, patch_size=c.patch_size,
                temporal_patch_size=c.temporal_patch_size, merge_size=c.merge_size, mean=c.image_mean, std=c.image_std)
            counts = num_image_tokens(out["image_grid_thw"], c.merge_size).tolist()
        blocks: list[list[int]] = []
        if videos:
            v = self.preprocess_videos(videos, allow_download=opts.allow_download)
            out["pixel_values_videos"], out["video_grid_thw"] = v.pixel_values_videos, v.video_grid_thw
            blocks = [self._video_ids(g, ts) for g, ts in zip(v.video_grid_thw.tolist(), v.timestamps)]
        expanded, i_start, v_start = [], 0, 0
        for b, ids in enumerate(rows):
            n_img = sum(1 for t in ids if t == self.image_token_id)
            n_vid = sum(1 for t in ids if t == self.video_token_id)
            expanded.append(self._expand(ids, counts[i_start:i_start + n_img], blocks[v_start:v_start + n_vid], b))
            i_start, v_start = i_start + n_img, v_start + n_vid
        if i_start != len(counts) or v_start != len(blocks):
            raise ProcessorError(f"the prompts hold {i_start} <|image|> and {v_start} <|video|> placeholders but "
                                 f"{len(counts)} images and {len(blocks)} videos were given; give one placeholder "
                                 "per image / video")
        text = self._pad(expanded, opts)
        if opts.return_tensors != "pt":  # "np" and None: numpy pixels and grids, as transformers gives them
            out = {k: v.numpy() for k, v in out.items()}
        return BatchFeature({k: v for k, v in {**text, **out}.items() if k in KEYS})

    # ------------------------------------------------------------------ video

    def preprocess_videos(self, videos, allow_download: bool = False) -> video.VideoInputs:
        """File paths / URLs / `video.SampledVideo`s -> `video.VideoInputs` with this processor's video settings
        (the pixels and grids, plus each video's frame indices and per-temporal-patch timestamps)."""
        c = self.video_config
        return video.preprocess_videos(videos, sample_fps=c.fps, max_duration=c.max_duration, min_pixels=c.min_pixels,
                                   max_pixels=c.max_pixels, patch_size=c.patch_size,
                                   temporal_patch_size=c.temporal_patch_size, merge_size=c.merge_size,
                                   mean=c.image_mean, std=c.image_std, allow_download=allow_download)

    def _video_ids(self, grid: list[int], timestamps: list[float]) -> list[int]:
        """The ids that replace one <|video|>: per temporal patch, an image block and its whole seconds as text
        (video.frame_blocks_text), tokenized as transformers does after its text replacement."""
        return self.tokenizer.encode(video.frame_blocks_text(grid, timestamps, self.video_config.merge_size))

    # ------------------------------------------------------------------ placeholders and padding

    def _expand(self, ids: list[int], counts: list[int], videos: list[list[int]], which: int) -> list[int]:
        return expand_placeholders(ids, self.image_token_id, self.video_token_id, counts, videos, which)

    def mm_token_type_ids(self, ids: list[int]) -> list[int]:
        """Per token: 1 image placeholder, 2 video-frame placeholder, 0 anything else (prompt_ids.token_types)."""
        return token_types(ids, self.image_token_id, self.video_start_id, self.video_end_id)

    def _pad(self, rows: list[list[int]], opts: Options) -> dict:
        return left_pad(rows, self.pad_token_id, self.mm_token_type_ids, opts.padding, opts.return_tensors)


def _is_batch(conversation) -> bool:
    """A list of conversations (each a list of messages), as transformers reads it."""
    return isinstance(conversation, (list, tuple)) and bool(conversation) and all(
        isinstance(c, (list, tuple)) for c in conversation)


def _flatten(values) -> list:
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        return [values]
    return [v for x in values for v in (_flatten(x) if isinstance(x, (list, tuple)) else [x])]


def load_processor(path: str | Path) -> Processor:
    """The processor of a checkpoint folder (tokenizer.json, preprocessor_config.json, chat template)."""
    return Processor.from_pretrained(path)
