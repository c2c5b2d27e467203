"""Opening a user's image or video file: local regular files only, opened by us, downloads only when asked.

* `open_regular(path, what, error)` opens a local path for reading and hands back the open file object. PIL and
  PyAV get that object, never the name, so no name can select an FFmpeg protocol (`pipe:0`, `http:/host/x.mp4`
  as a relative path are files like any other). Missing paths, folders and anything but a regular file (a FIFO,
  a device such as /dev/stdin) are refused with the error class the caller names. The file is opened without
  blocking and checked with fstat, so a FIFO swapped in after a check cannot hang the caller.
* `local_file(source, what, error, allow_download)` turns a path, a `file://` URL or (only with
  `allow_download=True`) an http(s) URL into a local path, as a context manager: a download goes to a temporary
  folder that is removed on exit, and stops with an error past `MAX_DOWNLOAD_BYTES` or `DOWNLOAD_DEADLINE_S`.
  Redirects are followed to http(s) only; proxies come from the environment, as for any urllib download.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from .paths import is_remote_url, local_path, url_scheme

MAX_DOWNLOAD_BYTES = 1 << 30  # 1 GiB: more than any image or clip the model can use
DOWNLOAD_TIMEOUT_S = 30.0  # per network operation (connect, each read)
DOWNLOAD_DEADLINE_S = 600.0  # the whole download, so a server sending a byte at a time cannot hold us forever


def open_regular(path: Path, what: str, error: type[Exception], shown: str | None = None):
    """`path` opened for binary reading; a missing path, a folder or a non-regular file raises `error`."""
    shown = shown or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{what} file {shown} not found; check the path") from None
    except IsADirectoryError:
        raise error(f"{what} {shown} is a directory, not a file; give the path of one {what} file") from None
    except OSError as e:
        raise error(f"cannot open {what} {shown}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise error(f"{what} {shown} is {kind}; give the path of one {what} file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError(f"redirect to {newurl!r} refused (only http and https are followed)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, folder: Path, what: str, error: type[Exception], max_bytes: int | None = None) -> Path:
    """Fetch an http(s) `url` into `folder` with urllib, at most `max_bytes` (default MAX_DOWNLOAD_BYTES); every
    failure raises `error`."""
    max_bytes = MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes
    if url_scheme(url) not in ("http", "https"):
        raise error(f"{what} {url!r}: only http and https URLs can be downloaded")
    target = folder / "download"
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        with opener.open(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise error(f"{what} {url}: the server announces {int(declared):,} bytes, more than the "
                            f"{max_bytes:,} minglm4v downloads; download it yourself and pass the path")
            got, start = 0, time.monotonic()
            while chunk := response.read1(1 << 20):  # what has arrived, up to 1 MiB
                got += len(chunk)
                if got > max_bytes:
                    raise error(f"{what} {url}: more than {max_bytes:,} bytes, more than minglm4v downloads; "
                                "download it yourself and pass the path")
                if time.monotonic() - start > DOWNLOAD_DEADLINE_S:
                    raise error(f"{what} {url}: still downloading after {DOWNLOAD_DEADLINE_S:.0f} s; download it "
                                "yourself and pass the path")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, error):
            raise
        raise error(f"cannot download {what} {url}: {getattr(e, 'reason', e)}") from None
    return target


@contextlib.contextmanager
def local_file(source, what: str, error: type[Exception], allow_download: bool = False):
    """Yield (local Path, name to show) for `source`: a path or file:// URL as it is; an http(s) URL downloaded to a
    temporary folder (removed on exit) when `allow_download` is true, refused otherwise."""
    if isinstance(source, str) and is_remote_url(source):
        if not allow_download:
            shown = source if len(source) <= 200 else source[:200] + "..."
            raise error(f"{what} {shown!r} is a remote URL; minglm4v does not download unless you pass "
                        "allow_download=True. Or download it yourself and pass the local path")
        folder = Path(tempfile.mkdtemp(prefix="minglm4v-"))
        try:
            yield download(source, folder, what, error), source
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    path = local_path(source, what, error)
    yield path, str(path)
