"""Which device a model goes to: a checked `torch.device` from what a user wrote.

`check_device` refuses a GPU the machine does not have (rather than failing deep in a copy). `resolve_device`
adds "auto": CUDA, then Apple's MPS, then the CPU. `resolve_device_map` reads transformers' `device_map` argument
(`from_pretrained(..., device_map=...)`, handled there by accelerate) for a library that keeps the whole model on one
device: one device (a string, a torch.device or a CUDA index), "auto", or a dict whose values all name the same
device. A map that spreads the model over several devices, or offloads to "disk", is refused.
"""

from __future__ import annotations

import torch

from .errors import DeviceError


def check_device(device: str | int | torch.device) -> torch.device:
    """torch.device(device), refusing a device this machine does not have. An int is a CUDA index."""
    if isinstance(device, bool):
        raise DeviceError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'auto'")
    try:
        dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise DeviceError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda', 'cuda:0' or "
                          "'auto'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={str(device)!r} asks for a CUDA GPU, but torch sees none (torch "
                              f"{torch.__version__}, built with CUDA: {torch.version.cuda is not None}); "
                              "load on 'cpu', or run on a machine with a GPU and a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device={str(device)!r} asks for Apple's MPS, which this machine does not have")
    elif dev.type == "meta":
        raise DeviceError("device='meta' holds no data; use weights.build(config) for a model without weights")
    return dev


def auto_device() -> torch.device:
    """The best device here: the first CUDA GPU, else MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | int | torch.device) -> torch.device:
    """check_device, plus "auto" (CUDA, then MPS, then CPU)."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return auto_device()
    return check_device(device)


def _indexed(dev: torch.device) -> torch.device:
    """"cuda" as the index it means (the current GPU), so that "cuda" and "cuda:0" count as one device."""
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_device_map(device_map) -> torch.device:
    """The one device that transformers' `device_map` argument asks for.

    Accepted: None (the CPU, as transformers without accelerate), one device ("cpu", "cuda:0", 0,
    torch.device("mps")), "auto" (CUDA, then MPS, then CPU; transformers would spread a model over every GPU,
    this library keeps it on the first), or a dict {module name: device} whose values all name the same device,
    e.g. {"": 0}. Anything that spreads the model over several devices raises DeviceError."""
    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, dict):
        if not device_map:
            raise DeviceError("device_map={} names no device; pass one device such as 'cuda:0', or 'auto'")
        offload = sorted({str(v) for v in device_map.values() if str(v) == "disk"})
        if offload:
            raise DeviceError("device_map offloads modules to 'disk'; minglm4v keeps the whole model on one "
                              "device. Pass one device (e.g. device_map='cpu'), or quantize the model to fit")
        devices = {str(_indexed(resolve_device(v))): k for k, v in device_map.items()}
        if len(devices) > 1:
            spread = ", ".join(f"{k!r} -> {d}" for d, k in devices.items())
            raise DeviceError(f"device_map spreads the model over {len(devices)} devices (e.g. {spread}); "
                              "minglm4v keeps the whole model on one device. Pass one device, e.g. "
                              "device_map='cuda:0', or 'auto'")
        return resolve_device(next(iter(device_map.values())))
    if isinstance(device_map, str) and device_map in ("balanced", "balanced_low_0", "sequential"):
        raise DeviceError(f"device_map={device_map!r} asks accelerate to spread the model over several GPUs; "
                          "minglm4v keeps the whole model on one device. Pass 'auto' or one device such as 'cuda:0'")
    return resolve_device(device_map)
