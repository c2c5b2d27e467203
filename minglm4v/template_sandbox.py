"""Rendering a checkpoint's own chat template (jinja2) so that a hostile file can neither escape nor hang nor exhaust
memory.

Mirrors how transformers renders chat templates (`render_jinja_template` in utils/chat_template_utils.py: an
`ImmutableSandboxedEnvironment` with `trim_blocks` and `lstrip_blocks`, and a `raise_exception` global), with bounds
that transformers does not set:

* `**` on integers whose result would exceed MAX_INT_BITS bits, and `*` / `%` that would build a string or list
  longer than MAX_OUTPUT_CHARS, are refused before they compute (the sandbox intercepts these operators, so jinja
  never folds them at compile time either);
* every filter, global and method call refuses integer arguments beyond MAX_INT_ARG (`'a'|center(10**9)`,
  `'x'.ljust(10**9)`), and `range` yields at most MAX_RANGE numbers;
* the output is collected piece by piece and stops at MAX_OUTPUT_CHARS;
* a line tracer on the template's own frames stops rendering after TIME_LIMIT_S seconds (nested loops) or when the
  process's peak memory has grown by MAX_MEMORY_BYTES;
* every failure, whatever its type (TemplateError, OverflowError, RecursionError, TypeError, MemoryError, ...),
  becomes one `ChatTemplateError` naming the template's file.
"""

from __future__ import annotations

import functools
import math
import re
import resource
import sys
import time
from typing import Any

from .errors import ChatTemplateError, MessageError, MinGlmError

MAX_OUTPUT_CHARS = 4 << 20      # 4 Mi characters: a 64k-token prompt is ~300 k
MAX_INT_BITS = 4096             # 2**4096 is far beyond any number a prompt needs
MAX_INT_ARG = 1_000_000         # largest integer argument a filter or method may get
MAX_RANGE = 10_000              # longest range()
TIME_LIMIT_S = 1.0              # the published templates render in well under a millisecond
MAX_MEMORY_BYTES = 512 << 20    # growth of the process's peak memory while rendering
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\*|\d{7,})|%[-+ #0]*\d*\.(\*|\d{7,})")


class _Stop(Exception):
    """Raised inside rendering when a bound is hit; carries the reason."""


def _size(value) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _check_int_args(what: str, args, kwargs) -> None:
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_INT_ARG:
            raise _Stop(f"{what} got the integer {a if a.bit_length() < 64 else f'of {a.bit_length()} bits'}, "
                        f"beyond the limit of {MAX_INT_ARG:,}")


def _bounded(name: str, fn):
    @functools.wraps(fn)  # keeps jinja's pass_context / pass_environment marker, which the filter needs
    def call(*args, **kwargs):
        _check_int_args(f"{name}()", args, kwargs)
        return fn(*args, **kwargs)
    return call


def _range(*args):
    _check_int_args("range()", args, {})
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise _Stop(f"range() of {len(r):,} numbers, beyond the limit of {MAX_RANGE:,}")
    return r


def _environment():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"**", "*", "%", "//"})

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right * math.log2(abs(left)) > MAX_INT_BITS:
                    raise _Stop(f"{left} ** {right} would have more than {MAX_INT_BITS} bits")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    size = _size(seq)
                    if size is not None and isinstance(n, int) and size * n > MAX_OUTPUT_CHARS:
                        raise _Stop(f"repeating a {type(seq).__name__} of {size:,} items {n:,} times is beyond the "
                                    f"limit of {MAX_OUTPUT_CHARS:,}")
            if operator == "%" and isinstance(left, str) and _FORMAT_WIDTH.search(left):
                raise _Stop("a '%' format with a huge or '*' width or precision")
            return super().call_binop(context, operator, left, right)

        def call(self, *args, **kwargs):  # jinja calls it as call(context, obj, *args, **kwargs)
            context, obj, *rest = args
            _check_int_args(f"calling {getattr(obj, '__name__', type(obj).__name__)}", rest, kwargs)
            return super().call(context, obj, *rest, **kwargs)

        def wrap_str_format(self, value):  # `'...'.format` / `.format_map`, looked up as an attribute
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None

            def checked(*args, **kwargs):
                if re.search(r"\{[^{}]*:[^{}]*(\d{7,}|\{)", value.__self__):
                    raise _Stop("a str.format field with a huge or nested width")
                return wrapped(*args, **kwargs)
            return checked

    env = Bounded(trim_blocks=True, lstrip_blocks=True)
    env.filters = {name: _bounded(f"the {name!r} filter", f) for name, f in env.filters.items()}
    _range.__name__ = "range"
    env.globals["range"] = _range
    return env


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    """The template compiled in a bounded environment (cached: compiling costs far more than rendering)."""
    return _environment().from_string(template)


class _Watch:
    """A line tracer for template frames only: stops at the deadline or when peak memory grew too much."""

    def __init__(self, time_limit: float):
        self.deadline = time.monotonic() + time_limit
        self.time_limit = time_limit
        self.peak0 = _peak_rss()
        self.lines = 0

    def __call__(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename == "<template>":
            return self.local
        return None

    def local(self, frame, event, arg):  # every line a clock read; every 16th a getrusage call
        self.lines += 1
        if time.monotonic() > self.deadline:
            raise _Stop(f"rendering took longer than {self.time_limit:g} s")
        if self.lines % 16 == 0 and _peak_rss() - self.peak0 > MAX_MEMORY_BYTES:
            raise _Stop(f"rendering grew memory by more than {MAX_MEMORY_BYTES >> 20} MiB")
        return self.local


def _peak_rss() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS: stricter there)
    return kib * 1024


def render_template(template: str, where: str, time_limit: float = TIME_LIMIT_S, **variables: Any) -> str:
    """Render `template` with `variables` inside the bounds above; `where` names the file in every error."""
    try:
        import jinja2  # noqa: F401  (only to say what is missing)
    except ImportError as e:
        raise MinGlmError(f"{where} is a chat template of its own, which needs jinja2: pip install jinja2") from e

    def raise_exception(message):
        raise MessageError(f"the chat template {where} refused the conversation: {message}")

    watch, previous = _Watch(time_limit), sys.gettrace()
    pieces, total = [], 0
    sys.settrace(watch)
    try:
        compiled = _compile(template)
        for piece in compiled.generate(**variables, raise_exception=raise_exception):
            total += len(piece)
            if total > MAX_OUTPUT_CHARS:
                raise _Stop(f"the output grew beyond {MAX_OUTPUT_CHARS:,} characters")
            pieces.append(piece)
    except MessageError:
        raise
    except _Stop as e:
        raise ChatTemplateError(f"the chat template {where} was stopped: {e}. A chat template only formats a "
                                "conversation; this one computes far more than that. Use the checkpoint's "
                                "original template") from None
    except Exception as e:  # TemplateError, OverflowError, RecursionError, TypeError, MemoryError, ...
        raise ChatTemplateError(f"the chat template {where} failed: {type(e).__name__}: {str(e)[:300]}") from None
    finally:
        sys.settrace(previous)
    return "".join(pieces)
