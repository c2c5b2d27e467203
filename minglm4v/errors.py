"""The errors minglm4v raises for bad input. Catch `MinGlmError` for all of them.

Each also derives from the standard exception a Python user would expect (`ValueError`, `FileNotFoundError`), so
`except ValueError` keeps working. Messages say what was wrong and what to do.
"""


class MinGlmError(Exception):
    """Base class of every error minglm4v raises on purpose."""


class ConfigError(MinGlmError, ValueError):
    """A config value or combination GLM-4.1V cannot have."""


class ImageError(MinGlmError, ValueError):
    """An image that cannot be read or preprocessed."""


class InputError(MinGlmError, ValueError):
    """Model inputs that do not fit together (placeholder tokens vs. grids vs. pixels, masks vs. ids)."""


class CheckpointError(MinGlmError, ValueError):
    """A checkpoint folder whose tensors do not match the model: unknown, missing, mis-shaped or mis-typed."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint folder, config.json or shard file that is not there."""
