"""Reading the small JSON files of a checkpoint folder (config.json, the shard index, preprocessor configs) strictly.

A file that is not UTF-8, not JSON, nested absurdly deep, larger than any real one, or whose top level is not an
object raises the caller's error class naming the file; duplicate keys are refused rather than last-one-wins.
`expect` checks one field's type and names the file and the field when it is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_JSON_BYTES = 64 << 20   # the published config/index/preprocessor files are < 1 MB
MAX_DEPTH = 64              # they nest 3 deep


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:                       # brackets outside strings; cheap next to json.loads
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_json(path, error: type[Exception]) -> dict:
    """The JSON object in `path`; every way the file can be wrong raises `error` naming it."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise error(f"{path}: {size:,} bytes is far larger than any such file ({MAX_JSON_BYTES:,} at most)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}); JSON files must be UTF-8") from None
    if _depth(text) > MAX_DEPTH:
        raise error(f"{path}: JSON nested more than {MAX_DEPTH} levels deep; this is not a checkpoint file")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:                # JSONDecodeError is a ValueError, and so is a duplicate key
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return data


def expect(value, types, path, field: str, error: type[Exception]):
    """`value` if it is one of `types` (bool is never taken for int), else `error` naming file and field."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join(t.__name__ for t in types)
        raise error(f"{path}: field {field!r} must be {names}, got {type(value).__name__} ({value!r:.60})")
    return value
