"""minglm4v: GLM-4.1V (Glm4vForConditionalGeneration) rebuilt from scratch, one file per component.

Shape legend, used in comments across the package:
    B batch            L sequence length        N patches (rows of pixel_values)
    t h w grid         m spatial merge size     T frames
    H query heads      Hkv key/value heads      D head dim       C width (channels)

Components, one file each: see the README's package table. The public names below are the ones a user needs;
everything else is imported from the module that defines it.
"""


from importlib import import_module

from .config import Glm4vConfig, TextConfig, VisionConfig, glm41v_9b, tiny
from .errors import (
    AdapterError,
    ChatTemplateError,
    CheckpointError,
    CheckpointNotFoundError,
    CliError,
    ConfigError,
    DatasetError,
    DeviceError,
    GenerationError,
    ImageError,
    InputError,
    LoadArgumentError,
    MessageError,
    MinGlmError,
    ProcessorError,
    QuantError,
    SamplingError,
    ShippedDataError,
    TaskError,
    TokenizerError,
    VideoError,
    VisionInputError,
)

__version__ = "0.1.0"

# Heavier entry points are imported on first use, so `import minglm4v` stays quick.
_LAZY = {
    "preprocess": "minglm4v.patchify",
    "load": "minglm4v.weights",
    "save": "minglm4v.weights",
    "load_processor": "minglm4v.processor",
    "split_thinking": "minglm4v.chat",
    "load_image": "minglm4v.patchify",
    "load_video": "minglm4v.video",
    "Processor": "minglm4v.processor",
    "BatchFeature": "minglm4v.batch",
    "Glm4vForConditionalGeneration": "minglm4v.model",
    "generate": "minglm4v.generation",
    "stream": "minglm4v.generation",
    "GenerateOutput": "minglm4v.generation",
    "AutoProcessor": "minglm4v.auto",
    "pipeline": "minglm4v.pipelines",
    "iter_checkpoint": "minglm4v.checkpoint",
    "resolve_device_map": "minglm4v.devices",
    "QuantLinear": "minglm4v.quant",
    "quantize_model": "minglm4v.quant",
    "LoraConfig": "minglm4v.lora",
    "add_lora": "minglm4v.lora",
    "merge_and_unload": "minglm4v.lora",
    "load_adapter": "minglm4v.adapters",
    "save_adapter": "minglm4v.adapters",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minglm4v' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = ["Glm4vConfig", "TextConfig", "VisionConfig", "glm41v_9b", "tiny", "__version__",
           "MinGlmError", "ConfigError", "ImageError", "InputError", "CheckpointError", "CheckpointNotFoundError",
           "TokenizerError", "SamplingError", "TaskError", "GenerationError", "MessageError", "ProcessorError",
           "ChatTemplateError", "VideoError", "DeviceError", "VisionInputError", "CliError", "QuantError",
           "AdapterError", "DatasetError", "ShippedDataError", "LoadArgumentError"]
__all__ += list(_LAZY)
