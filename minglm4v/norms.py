"""RMSNorm, shared by the vision tower and the text decoder (transformers' `Glm4vRMSNorm`).

    y = w * (x / sqrt(mean(x^2) + eps))

The statistics are computed in float32 and the result is cast back to the input dtype *before* the weight
multiply (docs/glm41v.md §4, "Numerics"): in bfloat16 that order changes the last bit, and the oracle does it this way.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        # x / sqrt(mean(x^2) + eps)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)
