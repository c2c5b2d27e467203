"""The errors minglm4v raises for bad input. Catch `MinGlmError` for all of them.

Each also derives from the standard exception a Python user would expect (`ValueError`, `FileNotFoundError`), so
`except ValueError` keeps working. Messages say what was wrong and what to do.

The classes, all defined here, by where they are raised:
    ConfigError             config.json values or combinations GLM-4.1V cannot have          (config_io.py)
    CheckpointError         tensors that do not match the model, forged safetensors headers   (weights.py,
                            or indexes, failed saves; CheckpointNotFoundError for a missing    checkpoint.py,
                            folder, config, shard or Hub id (also a FileNotFoundError)         safetensors_io.py,
                                                                                               hub.py, atomic_save.py)
    ImageError              unreadable, empty, huge or oddly shaped images                    (patchify.py)
    VideoError              unreadable or frameless videos                                    (video.py)
    TokenizerError          a missing tokenizer.json or a token it lacks                      (tokenizer.py)
    MessageError            conversations not in the message format                           (chat.py)
    ProcessorError          processor files, placeholder counts, images mixed with video      (processor.py)
    ChatTemplateError       a checkpoint's chat template that fails or exceeds the bounds     (template_sandbox.py)
                            (a ProcessorError)
    InputError              model inputs that do not fit together                             (model.py, mrope.py)
    VisionInputError        pixel_values / grids the vision tower cannot encode               (vision.py)
    SamplingError           sampling settings out of range, NaN/inf logits                    (sampling.py)
    GenerationError         max_new_tokens, stop/pad ids, masks, prompts longer than the context (generation.py)
    DeviceError             a device that is not there (e.g. "cuda" without a GPU), a
                            device_map over several devices                                   (devices.py)
    TaskError               TinyVQA requests it cannot serve                                  (tinyvqa.py)
    CliError                command-line arguments that cannot be used                        (__main__.py)
    QuantError              quantization schemes, group sizes or widths that cannot be used   (quant*.py)
    AdapterError            LoRA settings, targets and adapter folders                        (lora.py, adapters.py)
    DatasetError            fine-tuning data: a JSONL line that is not a usable conversation  (finetune_data.py)
    ShippedDataError        a file that ships with minglm4v (data/) is missing                (resources.py)
    LoadArgumentError       from_pretrained / pipeline arguments that cannot be honoured      (auto.py, pipelines.py)
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


class TokenizerError(MinGlmError, ValueError):
    """A tokenizer file that cannot be used, or a token it does not have."""


class SamplingError(MinGlmError, ValueError):
    """Sampling settings that make no sense, or logits that cannot be sampled from."""


class TaskError(MinGlmError, ValueError):
    """A TinyVQA request that cannot be served (unknown question kind, bad image)."""


class GenerationError(MinGlmError, ValueError):
    """Generation settings or a prompt that cannot be generated from."""


class MessageError(MinGlmError, ValueError):
    """A conversation that is not in the expected message format."""


class ProcessorError(MinGlmError, ValueError):
    """A processor folder or a prompt that cannot be turned into model inputs."""


class ChatTemplateError(ProcessorError):
    """A checkpoint's own chat template that fails, or that would run too long or grow too large, while rendering."""


class VideoError(MinGlmError, ValueError):
    """A video that cannot be read, sampled or preprocessed."""


class DeviceError(MinGlmError, ValueError):
    """A device that this machine does not have (e.g. "cuda" without a GPU)."""


class VisionInputError(InputError):
    """pixel_values / grid_thw that the vision tower cannot encode."""


class CliError(MinGlmError, ValueError):
    """A command-line argument that cannot be used."""


class QuantError(MinGlmError, ValueError):
    """A quantization scheme, group size or layer width that cannot be used."""


class AdapterError(MinGlmError, ValueError):
    """LoRA settings that make no sense, or an adapter folder that does not fit the model."""


class DatasetError(MinGlmError, ValueError):
    """A fine-tuning data file, or one of its lines, that cannot be used (the message names the line)."""


class ShippedDataError(MinGlmError, FileNotFoundError):
    """A file that ships with minglm4v (the default checkpoint, a demo picture) is missing: an incomplete install."""


class LoadArgumentError(MinGlmError, ValueError):
    """A transformers-style argument (from_pretrained, pipeline) that minglm4v cannot honour."""
