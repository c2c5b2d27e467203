"""What the processor returns: a dict of model inputs with `.to(...)` and attribute access.

Mirrors transformers' `BatchFeature` (feature_extraction_utils.py) as far as a caller sees it: a `dict` subclass,
so `model.generate(**inputs)` and `inputs["input_ids"]` work; `inputs.input_ids` reads a key; `inputs.to("cuda")`
moves every tensor; `inputs.to(torch.bfloat16)` casts only the floating tensors (pixels), never the ids, masks or
grids; `inputs.to("cuda", torch.bfloat16)` / `.to(device=..., dtype=...)` do both. `.to` returns the batch itself,
changed in place, as transformers' does.
"""

from __future__ import annotations

import torch

from .errors import ProcessorError


class BatchFeature(dict):
    """A dict of model inputs (tensors or, with `return_tensors=None`, lists)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this batch has no {name!r}; it holds {', '.join(self) or 'nothing'}") from None

    def to(self, *args, device=None, dtype=None, non_blocking: bool = False) -> "BatchFeature":
        """Move tensors to a device and/or cast floating tensors to a dtype (ids and grids keep their dtype)."""
        for a in args:
            if isinstance(a, torch.dtype):
                if dtype is not None:
                    raise ProcessorError("BatchFeature.to() got two dtypes")
                dtype = a
            elif isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
                if device is not None:
                    raise ProcessorError("BatchFeature.to() got two devices")
                device = a
            else:
                raise ProcessorError(f"BatchFeature.to() takes a device (e.g. 'cuda', torch.device) and/or a torch "
                                     f"dtype, got {a!r:.60}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ProcessorError(f"BatchFeature.to(dtype=...) needs a floating torch dtype (it casts the pixels), "
                                 f"got {dtype!r}")
        device = torch.device(device) if device is not None else None
        for key, value in self.items():
            if not isinstance(value, torch.Tensor):
                continue
            cast = dtype if dtype is not None and value.is_floating_point() else None
            self[key] = value.to(device=device, dtype=cast, non_blocking=non_blocking)
        return self
