"""Local files stay local: the one place that decides whether a user's string is a path or a URL.

Every route that opens a user's file (images, videos, checkpoint folders, message items) goes through `local_path`.

* `scheme://...` (http, https, ftp, s3, hf, ...) and `data:` strings are URLs: refused with the error class the
  caller names, and a hint to download the file first. `file://` URLs become the local path they name.
* Anything else is a local path, even when it starts with something that looks like a protocol (`pipe:0`,
  `http:/127.0.0.1/x.mp4` is a relative path with a folder called `http:`). Callers open the file themselves and
  hand libraries the open file object, so no name can make FFmpeg or PIL choose a protocol.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(value) -> str | None:
    """The scheme of a URL string (`'https'`, `'file'`, `'data'`), or None for a plain path."""
    if not isinstance(value, str):
        return None
    m = _URL.match(value)
    if m:
        return m.group(1).lower()
    if value[:5].lower() == "data:":
        return "data"
    return None


def is_remote_url(value) -> bool:
    """True for a URL that would need the network (anything with a scheme but `file`)."""
    scheme = url_scheme(value)
    return scheme is not None and scheme != "file"


def local_path(value, what: str, error: type[Exception]) -> Path:
    """`value` (str or os.PathLike) as a local Path; a remote URL raises `error` naming `what`."""
    if isinstance(value, Path):
        return value
    if isinstance(value, os.PathLike):
        return Path(os.fspath(value))
    if not isinstance(value, str):
        raise error(f"{what} must be a path (str or pathlib.Path), got {type(value).__name__}")
    scheme = url_scheme(value)
    if scheme == "file":
        parsed = urlparse(value)
        if parsed.netloc not in ("", "localhost"):
            raise error(f"{what} {value!r} is a file:// URL on another host ({parsed.netloc!r}); "
                        "only local files can be read")
        return Path(unquote(parsed.path))
    if scheme is not None:
        shown = value if len(value) <= 200 else value[:200] + "..."
        raise error(f"{what} {shown!r} is a URL ({scheme}); minglm4v reads local files only and never downloads "
                    "on its own. Download it first and pass the local path")
    return Path(value)
