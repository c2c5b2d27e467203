"""The GLM-4 text decoder of GLM-4.1V (docs/glm41v.md §5): embeddings, 40 sandwich-norm layers, final norm.

Mirrors transformers' `Glm4vTextModel` with `Glm4vTextDecoderLayer`, `Glm4vTextAttention`, `Glm4vTextMLP` and
`Glm4vRMSNorm`. Module names equal the checkpoint names under `model.language_model.`.

One layer ("sandwich" norms: each sub-block is normed before *and* after, then added to the residual):
    x = x + post_self_attn_layernorm(self_attn(input_layernorm(x)))
    x = x + post_mlp_layernorm(mlp(post_attention_layernorm(x)))
(`post_attention_layernorm` is, despite its name, the norm *before* the MLP.)

Attention is grouped-query (H query heads share Hkv key/value heads; KV head j serves query heads
j*H/Hkv ... (j+1)*H/Hkv - 1), q/k/v carry a bias, o_proj has none, M-RoPE (mrope.py) turns q and k, and
`scaled_dot_product_attention` does the softmax with a causal mask and, for padded batches, a padding mask.

Shapes: B batch, L sequence, C width (hidden_size), H query heads, Hkv key/value heads, D head dim, I MLP width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache
from .config import TextConfig
from .errors import InputError
from .mrope import apply_mrope, rotary_cos_sin
from .norms import RMSNorm

Mask = tuple  # (boolean attention mask (B, 1, L, T) or None, is_causal): see attention_mask_4d


class TextAttention(nn.Module):
    """Grouped-query self-attention with M-RoPE; the same attribute names as vision_attention.VisionAttention."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads  # H, Hkv
        self.head_dim = config.head_dim  # D
        C, H, Hkv, D = config.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        self.q_proj = nn.Linear(C, H * D, bias=True)
        self.k_proj = nn.Linear(C, Hkv * D, bias=True)
        self.v_proj = nn.Linear(C, Hkv * D, bias=True)
        self.o_proj = nn.Linear(H * D, C, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, L, _ = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, L, H, D).transpose(1, 2)  # (B, H, L, D)
        k = self.k_proj(x).view(B, L, Hkv, D).transpose(1, 2)  # (B, Hkv, L, D)
        v = self.v_proj(x).view(B, L, Hkv, D).transpose(1, 2)  # (B, Hkv, L, D)
        q, k = apply_mrope(q, cos, sin), apply_mrope(k, cos, sin)
        if cache is not None:  # keys and values of everything so far: (B, Hkv, T, D), T = past + L
            k, v = cache.update(layer, k, v)
        # softmax(q k^T / sqrt(D) + mask) v, grouped-query: query head h reads KV head h // (H/Hkv), as if each KV
        # head were repeated H/Hkv times (k.repeat_interleave(H // Hkv, dim=1)), without making that copy
        attn_mask, is_causal = mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             enable_gqa=H != Hkv)  # (B, H, L, D)
        out = out.transpose(1, 2).reshape(B, L, H * D)  # (B, L, H*D)
        return self.o_proj(out)


class TextMLP(nn.Module):
    """down(up * silu(gate)) with gate and up fused in one projection: first half gate, second half up."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.intermediate_size = config.intermediate_size  # I
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate_up_proj(x)  # (B, L, 2I)
        gate, up = h.split(self.intermediate_size, dim=-1)  # (B, L, I) each
        return self.down_proj(up * F.silu(gate))


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        C, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(C, eps)
        self.self_attn = TextAttention(config)
        self.post_self_attn_layernorm = RMSNorm(C, eps)
        self.post_attention_layernorm = RMSNorm(C, eps)  # the pre-MLP norm
        self.mlp = TextMLP(config)
        self.post_mlp_layernorm = RMSNorm(C, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Mask,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        # x = x + post_norm(attn(pre_norm(x)))
        x = x + self.post_self_attn_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer))
        # x = x + post_norm(mlp(pre_norm(x)))
        return x + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(x)))


def attention_mask_4d(attention_mask: torch.Tensor | None, L: int, past: int = 0,
                      device: torch.device | None = None) -> Mask:
    """(B, past + L) mask, 1 = real token, 0 = pad -> (boolean (B, 1, L, past + L) or None, is_causal).

    Query i (at absolute slot past + i) sees key j when j <= past + i (causal) and key j is real. A pad query would
    see nothing (and softmax over nothing is NaN), so it is allowed to see itself; its output is filler.
    Without padding no tensor is built: plain causal attention for a prefill, no mask at all for one new token."""
    T = past + L
    if attention_mask is not None and attention_mask.shape[-1] != T:
        raise InputError(f"attention_mask covers {attention_mask.shape[-1]} positions but the cache holds {past} "
                         f"and {L} are new; extend the mask by one column per generated token")
    if attention_mask is None or bool(attention_mask.all()):
        if L == 1:
            return None, False  # the newest token sees everything
        if past == 0:
            return None, True
        attention_mask = torch.ones(1, T, dtype=torch.long, device=device)
    device = attention_mask.device
    slots = torch.arange(T, device=device)
    causal = slots[None, :] <= (past + torch.arange(L, device=device))[:, None]  # (L, T)
    mask = causal[None] & attention_mask.bool()[:, None, :]  # (B, L, T)
    mask = mask | (slots[None, :] == (past + torch.arange(L, device=device))[:, None])[None]  # (B, L, T)
    return mask[:, None], False  # (B, 1, L, T)


class TextModel(nn.Module):
    """Token embeddings, the decoder layers and the final norm. Called with embeddings (vision features already
    spliced in by model.py) and 3-D position ids (mrope.py)."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """inputs_embeds (B, L, C), position_ids (3, B, L), attention_mask (B, past + L) or None -> (B, L, C).

        With a `cache`, keys and values of earlier positions come from it and this call's are added to it."""
        B, L, _ = inputs_embeds.shape
        past = cache.length if cache is not None else 0
        cos, sin = rotary_cos_sin(position_ids, self.config, inputs_embeds.dtype)  # (B, L, R) each
        mask = attention_mask_4d(attention_mask, L, past, inputs_embeds.device)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.advance(L)
        return self.norm(x)
