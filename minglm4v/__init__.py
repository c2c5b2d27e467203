"""minglm4v: GLM-4.1V (Glm4vForConditionalGeneration) rebuilt from scratch, one file per component.

Shape legend, used in comments across the package:
    B batch            L sequence length        N patches (rows of pixel_values)
    t h w grid         m spatial merge size     T frames
    H query heads      Hkv key/value heads      D head dim       C width (channels)

Components: config (config.py), pixels -> patches (patchify.py), vision tower (vision.py), 3-D rotary positions
(mrope.py), GLM-4 decoder (decoder.py), the whole model (model.py), checkpoints (weights.py), tokens and the chat
format (tokenizer.py, chat.py), messages -> model inputs (processor.py).
"""

from importlib import import_module

from .config import Glm4vConfig, TextConfig, VisionConfig, glm41v_9b, tiny
from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, ImageError, InputError, MinGlmError

__version__ = "0.1.0"

# Heavier entry points are imported on first use, so `import minglm4v` stays quick.
_LAZY = {
    "preprocess": "minglm4v.patchify",
    "load": "minglm4v.weights",
    "save": "minglm4v.weights",
    "load_processor": "minglm4v.processor",
    "split_thinking": "minglm4v.chat",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minglm4v' has no attribute {name!r}")


__all__ = ["Glm4vConfig", "TextConfig", "VisionConfig", "glm41v_9b", "tiny", "MinGlmError", "ConfigError",
           "ImageError", "InputError", "CheckpointError", "CheckpointNotFoundError", *_LAZY]
