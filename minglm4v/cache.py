"""The KV cache: keys and values of every layer, kept so that decoding never recomputes the prompt.

Without a cache, step k of generation runs the whole sequence (prompt + k tokens) through all layers again: the
work per step grows with the length. With it, a step runs one new token per sequence and attends to the stored
keys and values of everything before: the work per step is (almost) flat.

The cache is allocated once at its final size (`max_len` = prompt + new tokens), so no step copies it: a step writes
its new keys and values at `[length, length + n)` and attends to `[0, length + n)`. Shapes: B batch, Hkv key/value
heads, T max_len, D head dim.
"""

from __future__ import annotations

import torch

from .errors import InputError


class KVCache:
    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (batch, num_kv_heads, max_len, head_dim)  # (B, Hkv, T, D)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0  # positions filled, the same for every layer once a forward pass is complete

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, n, D) after what is cached; return all keys and values so far (B, Hkv, length+n, D).

        `length` itself moves on in `advance`, after the last layer, so every layer writes to the same slots."""
        n = k.shape[2]
        end = self.length + n
        if end > self.max_len:
            raise InputError(f"KV cache of {self.max_len} positions is full (need {end}); allocate a larger one")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def kv_bytes_per_token(config, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the cache needs per token of context: 2 (k and v) * layers * Hkv * D * bytes per number."""
    t = config.text_config
    return 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * torch.empty((), dtype=dtype).element_size()
