"""M-RoPE: three-dimensional rotary positions for text, image and video tokens (docs/glm41v.md §6).

Mirrors transformers' `Glm4vModel.get_rope_index` (the position ids), `Glm4vTextRotaryEmbedding` (the angles) and
`apply_multimodal_rotary_pos_emb` / `apply_rotary_pos_emb` (the rotation) for GLM-4.1V.

Every token gets three positions (t, h, w). Text tokens have t = h = w; the merged tokens of an image or of one
temporal patch of a video get (st, st + row, st + col), where st is one past the largest position so far. The
rotary half of each attention head is split into frequency bands by `mrope_section`: band 0 turns with t, band 1
with h, band 2 with w. Pairs are interleaved (dims 2j and 2j+1 rotate together), and only the first `rotary_dim`
dims of a head rotate; the rest pass through.

Video: the frames use the *image* placeholder id, inside a <|begin_of_video|> ... <|end_of_video|> span, one
<|begin_of_image|> ... <|end_of_image|> block (plus timestamp digits) per temporal patch. A prompt that holds both
images and videos is refused (`InputError`): the official model card rules it out, and transformers mixes them up.

Shapes: B batch, L sequence, D head dim, R rotary dims (= rotary_dim), F = R/2 frequencies.
"""

from __future__ import annotations

import torch

from .config import Glm4vConfig, TextConfig
from .errors import InputError

TEXT, IMAGE, VIDEO = 0, 1, 2  # token types, as transformers' mm_token_type_ids


def token_types(input_ids: torch.Tensor, config: Glm4vConfig) -> torch.Tensor:
    """(L,) ids -> (L,) types: IMAGE for a placeholder outside a video span, VIDEO inside one, TEXT otherwise."""
    types = torch.zeros_like(input_ids)
    in_video = False
    for i, tok in enumerate(input_ids.tolist()):
        if tok == config.video_start_token_id:
            in_video = True
        elif tok == config.video_end_token_id:
            in_video = False
        elif tok == config.image_token_id:
            types[i] = VIDEO if in_video else IMAGE
    return types


def _runs(types: list[int]) -> list[tuple[int, int, int]]:
    """Group equal consecutive types: [(type, start, end), ...]."""
    runs, start = [], 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            runs.append((types[start], start, i))
            start = i
    return runs


def get_rope_index(input_ids: torch.Tensor, config: Glm4vConfig, image_grid_thw: torch.Tensor | None = None,
                   video_grid_thw: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids -> position_ids (3, B, L) and rope_deltas (B, 1).

    Grids are taken in order across the whole batch (row 0's images first). Padded slots (attention_mask 0) get
    position 0; they are filler that attention never looks at. rope_delta = max position + 1 - real length: the
    offset that cached decoding adds to the plain token index (see `decode_position_ids`)."""
    B, L = input_ids.shape
    m = config.vision_config.spatial_merge_size
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                         f"{tuple(input_ids.shape)}; pass one mask entry per token")
    # one grid row per image, and one [1, h, w] row per temporal patch of each video
    grids = {IMAGE: _grid_rows(image_grid_thw, "image_grid_thw", m, B * L),
             VIDEO: _grid_rows(video_grid_thw, "video_grid_thw", m, B * L, split_time=True)}
    used = {IMAGE: 0, VIDEO: 0}
    position_ids = torch.zeros(3, B, L, dtype=torch.long, device=input_ids.device)
    deltas = []
    for b in range(B):
        keep = attention_mask[b].bool()
        types = token_types(input_ids[b][keep], config)
        if (types == IMAGE).any() and (types == VIDEO).any():
            raise InputError(f"row {b} holds both images and a video; GLM-4.1V cannot mix them in one prompt "
                             "(they share the placeholder id). Send them in separate prompts")
        pieces, st = [], 0  # st: next free position = max position so far + 1
        for kind, start, end in _runs(types.tolist()):
            n = end - start
            if kind == TEXT:
                # text: st, st+1, ... on all three axes
                pieces.append((st + torch.arange(n)).expand(3, n))
                st += n
                continue
            name = "image" if kind == IMAGE else "video temporal patch"
            if used[kind] >= len(grids[kind]):
                raise InputError(f"row {b} has a run of {n} {name} placeholder tokens at position {start} but "
                                 f"no {name} grid is left in {'image' if kind == IMAGE else 'video'}_grid_thw "
                                 f"({len(grids[kind])} given); pass one grid per {name.split()[0]}")
            t, h, w, patches = grids[kind][used[kind]]
            used[kind] += 1
            if n != t * h * w:
                raise InputError(f"row {b}: a run of {n} {name} placeholder tokens at position {start}, but its "
                                 f"grid {patches} (in patches) gives {t}x{h}x{w} = {t * h * w} merged tokens; "
                                 "expand each placeholder to grid_t*grid_h*grid_w/merge_size^2 tokens")
            # vision block: (st + t, st + row, st + col) in raster order; then text resumes at st + max(h, w)
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
            pieces.append(st + torch.stack([tt, hh, ww]).reshape(3, n))  # (3, t*h*w)
            st += max(h, w)
        pos = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)  # (3, real length)
        position_ids[:, b, keep] = pos.to(input_ids.device)
        deltas.append((int(pos.max()) + 1 if pos.numel() else 0) - pos.shape[1])
    for kind, name in ((IMAGE, "image_grid_thw"), (VIDEO, "video_grid_thw")):
        if used[kind] != len(grids[kind]):
            raise InputError(f"{name} describes {len(grids[kind])} {'images' if kind == IMAGE else 'temporal patches'}"
                             f" but the prompts hold only {used[kind]} placeholder runs for them; every grid needs "
                             "its placeholder tokens in input_ids")
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _grid_rows(grid_thw: torch.Tensor | None, name: str, m: int, tokens: int, split_time: bool = False
               ) -> list[tuple]:
    """(n, 3) patch grids -> merged (t, h, w, patch grid) per placeholder run; videos give one (1, h, w, ...) per
    temporal patch. `tokens` (all ids of the batch) bounds the number of runs before any list is built."""
    if grid_thw is None:
        return []
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        raise InputError(f"{name} must have shape (n, 3) holding (t, h, w) per item, got {tuple(grid_thw.shape)}")
    runs = int(grid_thw[:, 0].clamp(min=0).sum()) if split_time else grid_thw.shape[0]
    if runs > tokens:
        raise InputError(f"{name} {grid_thw.tolist()[:4]} describes {runs} placeholder runs, more than the "
                         f"{tokens} tokens of the prompts; pass the grid that came with these pixels")
    rows = []
    for t, h, w in grid_thw.tolist():
        if t < 1 or h % m or w % m or h < 1 or w < 1:
            raise InputError(f"{name} row {[t, h, w]}: t must be >= 1 and h, w positive multiples of the merge size "
                             f"{m}")
        if not split_time and t != 1:
            raise InputError(f"{name} row {[t, h, w]}: an image has t = 1; pass videos as video_grid_thw")
        rows += [(1, h // m, w // m, [t, h, w])] * t
    return rows


def text_position_ids(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-only prompts: position = number of real tokens before this one (pads -> 0), on all three axes.

    (B, L) mask -> position_ids (3, B, L), rope_deltas (B, 1)."""
    pos = attention_mask.long().cumsum(-1) - 1  # (B, L)
    pos = pos.masked_fill(attention_mask == 0, 0)
    deltas = pos.max(-1, keepdim=True).values + 1 - attention_mask.long().sum(-1, keepdim=True)  # (B, 1), all 0
    return pos.unsqueeze(0).expand(3, -1, -1), deltas


def decode_position_ids(rope_deltas: torch.Tensor, attention_mask: torch.Tensor, n_new: int) -> torch.Tensor:
    """Positions of new tokens during cached decoding, on all three axes:
    (number of real tokens before it) + rope_delta, i.e. max prefill position + 1 + k for the k-th new token.

    rope_deltas (B, 1) from the prefill; attention_mask (B, L_past + n_new) covering the prompt (with its left
    padding) and the new tokens -> (3, B, n_new)."""
    real_index = attention_mask.long().cumsum(-1) - 1  # (B, L_past + n_new): index among real tokens
    pos = real_index[:, -n_new:] + rope_deltas  # (B, n_new)
    return pos.unsqueeze(0).expand(3, -1, -1)


# ---------------------------------------------------------------------------------------------- rotary angles

def inv_freq(config: TextConfig) -> torch.Tensor:
    """(F,) inverse frequencies, float32.  inv_freq[j] = theta^(-2j / R)."""
    R = config.rotary_dim
    return 1.0 / (config.rope_theta ** (torch.arange(0, R, 2, dtype=torch.float32) / R))


def band_axis(config: TextConfig) -> torch.Tensor:
    """(F,) which position axis (0 = t, 1 = h, 2 = w) drives frequency j, from mrope_section."""
    return torch.repeat_interleave(torch.arange(3), torch.tensor(config.mrope_section))


def rotary_cos_sin(position_ids: torch.Tensor, config: TextConfig, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """position_ids (3, B, L) -> cos, sin (B, L, R), computed in float32 and cast to the activation dtype."""
    freqs = position_ids[..., None].float() * inv_freq(config).to(position_ids.device)  # (3, B, L, F)
    # angle_j = pos[axis(j)] * inv_freq[j]: pick, per frequency, the row of its band's axis
    axis = band_axis(config).to(position_ids.device)
    angles = freqs.gather(0, axis.view(1, 1, 1, -1).expand(1, *freqs.shape[1:])).squeeze(0)  # (B, L, F)
    # interleaved pairs: dims 2j and 2j+1 share angle_j
    angles = angles.repeat_interleave(2, dim=-1)  # (B, L, R)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the 90-degree turn of each interleaved pair."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


def apply_mrope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first R dims of every head. x (B, H, L, D), cos/sin (B, L, R) -> (B, H, L, D).

    out[2j]   = x[2j] cos_j - x[2j+1] sin_j
    out[2j+1] = x[2j+1] cos_j + x[2j] sin_j
    """
    R = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, L, R): same angles for every head
    x_rot, x_pass = x[..., :R], x[..., R:]
    return torch.cat([x_rot * cos + rotate_pairs(x_rot) * sin, x_pass], dim=-1)
