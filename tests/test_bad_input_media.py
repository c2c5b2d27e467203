"""Bad images and videos fail clearly, stay local and stay small (patchify.py, rgb.py, video.py, video_io.py,
media_files.py, media_limits.py).

* local files stay local: URLs refused unless downloading is asked for (a local HTTP server on 127.0.0.1 must
  receive no connection), names that look like FFmpeg protocols (`pipe:0`, `http:/host/x.mp4`) read as the files
  they name, folders and non-regular files refused by name;
* every route meets the same size limits before the big allocation (peak memory measured in a subprocess);
* messages name the real input, video errors are VideoErrors; transparency and still images are not silently wrong;
* `load_image` / `load_video` accept every documented source kind.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minglm4v import media_files, video, video_io
from minglm4v.errors import ImageError, MinGlmError, VideoError
from minglm4v.media_limits import MAX_GRID_PATCHES, check_grid
from minglm4v.patchify import load_image, num_image_tokens, preprocess, smart_resize, unpatchify

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
import make_video  # noqa: E402  (data/make_video.py)

ROOT = Path(__file__).resolve().parent.parent


def expect(fn, *needles, error=MinGlmError):
    """fn() must raise `error` (a MinGlmError and a ValueError) whose message holds every needle."""
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, MinGlmError) and isinstance(info.value, ValueError), type(info.value)
    message = str(info.value)
    for n in needles:
        assert n in message, f"{n!r} not in {message!r}"
    return message


def png_bytes(h=40, w=60, mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory) -> Path:
    """1 s at 12 fps, 64x48: a clip that differs from data/shapes.mp4 in every property probe reports."""
    return make_video.write(tmp_path_factory.mktemp("small") / "small.mp4", "libx264", width=64, height=48, seconds=1)


# ---------------------------------------------------------------------- a local HTTP server that must stay idle

@contextlib.contextmanager
def local_server(routes: dict, lifetime_s: float = 60.0):
    """An HTTP server on 127.0.0.1 (a thread; it shuts itself down after `lifetime_s`). Yields (base URL, the
    connections it accepted, the paths it was asked for). routes: path -> (status, headers, body)."""
    connections, paths = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            paths.append(self.path)
            status, headers, body = routes.get(self.path, (404, {}, b"not here"))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                body(self.wfile) if callable(body) else self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading, as it should
                pass

        def log_message(self, *args):  # quiet
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def verify_request(self, request, client_address):
            connections.append(client_address)  # any connection counts, even one that never sends a request
            return True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    timer = threading.Timer(lifetime_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", connections, paths
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture()
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_remote_urls_are_refused_and_never_fetched(data_dir):
    with local_server({"/x.png": (200, {}, png_bytes()), "/x.mp4": (200, {}, b"")}) as (base, conns, _):
        expect(lambda: load_image(base + "/x.png"), "remote URL", "allow_download=True", error=ImageError)
        expect(lambda: video.load_video(base + "/x.mp4"), "remote URL", "allow_download=True", error=VideoError)
        expect(lambda: video.preprocess_videos([base + "/x.mp4"]), "remote URL", error=VideoError)
        expect(lambda: load_image("data:image/png;base64,AAAA"), "URL", error=ImageError)
        expect(lambda: video.load_video("ftp://127.0.0.1/x.mp4"), "remote URL", error=VideoError)
        assert conns == []


def test_protocol_looking_relative_paths_are_local_files(tmp_path, monkeypatch, data_dir):
    with local_server({}) as (base, conns, _):
        port = base.rsplit(":", 1)[1]
        folder = tmp_path / "http:" / f"127.0.0.1:{port}"  # the relative path http:/127.0.0.1:PORT/...
        folder.mkdir(parents=True)
        (folder / "x.mp4").write_bytes((data_dir / "shapes.mp4").read_bytes())
        (folder / "x.png").write_bytes(png_bytes(30, 50))
        monkeypatch.chdir(tmp_path)
        name = f"http:/127.0.0.1:{port}/x.mp4"
        assert Path(name).is_file()
        assert video_io.probe(name) == video_io.VideoInfo(fps=12.0, total_frames=72, height=144, width=192)
        assert video.load_video(name).frames.shape == (12, 144, 192, 3)
        assert video.preprocess_videos([name]).video_grid_thw.tolist() == [[6, 10, 14]]
        assert load_image(f"http:/127.0.0.1:{port}/x.png").size == (50, 30)
        assert conns == []


def test_pipe_names_are_files_not_standard_input(tmp_path, data_dir, small_mp4):
    """With a video on standard input, `pipe:0` must be the local file of that name (or "not found")."""
    code = ("import shutil, sys\nfrom minglm4v import video_io\n"
            "for step in range(2):\n"
            "    try:\n        print('READ', video_io.probe('pipe:0'))\n"
            "    except Exception as e:\n        print(type(e).__name__, e)\n"
            "    shutil.copy(sys.argv[1], 'pipe:0')\n")
    with open(data_dir / "shapes.mp4", "rb") as stdin:
        out = subprocess.run([sys.executable, "-c", code, str(small_mp4)], stdin=stdin, cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300).stdout.splitlines()
    assert len(out) == 2, out
    assert out[0].startswith("VideoError") and "pipe:0 not found" in out[0], out
    assert out[1].startswith("READ") and "height=48, width=64" in out[1], out  # the file, not the clip on stdin


def test_file_urls_are_read(tmp_path, data_dir):
    (tmp_path / "a b.png").write_bytes(png_bytes(30, 50))
    assert load_image((tmp_path / "a b.png").as_uri()).size == (50, 30)  # file:///.../a%20b.png
    (tmp_path / "c d.mp4").write_bytes((data_dir / "shapes.mp4").read_bytes())
    assert video.load_video((tmp_path / "c d.mp4").as_uri()).indices == list(range(0, 72, 6))
    expect(lambda: load_image("file://elsewhere/x.png"), "another host", error=ImageError)


def test_folders_and_special_files_are_refused(tmp_path):
    (tmp_path / "photos.png").mkdir()
    expect(lambda: load_image(tmp_path / "photos.png"), "is a directory", error=ImageError)
    expect(lambda: video.load_video(tmp_path), "is a directory", error=VideoError)
    expect(lambda: video.preprocess_videos([tmp_path]), "is a directory", error=VideoError)
    expect(lambda: load_image(tmp_path / "gone.png"), "not found", error=ImageError)
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    expect(lambda: video.load_video(fifo), "not a regular file", error=VideoError)
    expect(lambda: load_image(fifo), "not a regular file", error=ImageError)
    expect(lambda: load_image("/dev/null"), "not a regular file", error=ImageError)


# ---------------------------------------------------------------------- downloading, only when asked

def test_download_when_asked(no_proxy, tmp_path, monkeypatch, data_dir):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary folders go
    clip = (data_dir / "shapes.mp4").read_bytes()
    with local_server({"/x.png": (200, {}, png_bytes(30, 50)), "/x.mp4": (200, {}, clip)}) as (base, _, paths):
        assert load_image(base + "/x.png", allow_download=True).size == (50, 30)
        assert video.load_video(base + "/x.mp4", allow_download=True).frames.shape == (12, 144, 192, 3)
        got = video.preprocess_videos([base + "/x.mp4"], allow_download=True)
        want = video.preprocess_videos([data_dir / "shapes.mp4"]).pixel_values_videos
        assert torch.equal(got.pixel_values_videos, want)
        assert paths == ["/x.png", "/x.mp4", "/x.mp4"]
    assert list(tmp_path.iterdir()) == []  # every temporary download removed


def test_download_failures(no_proxy, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(media_files, "MAX_DOWNLOAD_BYTES", 1000)
    big = b"\0" * 5000

    def drip(wfile):  # 100 bytes every 0.1 s
        for _ in range(8):
            wfile.write(b"\0" * 100)
            wfile.flush()
            time.sleep(0.1)

    monkeypatch.setattr(media_files, "DOWNLOAD_DEADLINE_S", 0.25)
    routes = {"/drip": (200, {}, drip), "/big": (200, {"Content-Length": "5000"}, big), "/stream": (200, {}, big),
              "/redirect": (302, {"Location": "file:///etc/passwd"}, b"")}
    with local_server(routes) as (base, _, _):
        expect(lambda: load_image(base + "/big", allow_download=True), "announces 5,000 bytes", error=ImageError)
        expect(lambda: load_image(base + "/stream", allow_download=True), "more than 1,000 bytes", error=ImageError)
        expect(lambda: video.load_video(base + "/redirect", allow_download=True), "redirect", error=VideoError)
        expect(lambda: load_image(base + "/missing.png", allow_download=True), "cannot download", error=ImageError)
        expect(lambda: load_image(base + "/drip", allow_download=True), "still downloading after", error=ImageError)
    expect(lambda: load_image("ftp://127.0.0.1/x.png", allow_download=True), "only http and https", error=ImageError)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


# ---------------------------------------------------------------------- the same limits on every route

def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def grown(setup: str, *actions: str) -> list[tuple[str, float]]:
    """Run `setup`, then each action in turn, in one fresh interpreter: per action its error (or 'ok') and how far it
    raised the peak memory, in MB. Each action is measured against the peak before it, so an action that allocates
    is seen even after others that did not."""
    code = f"import resource\n{setup}\npeak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    for action in actions:
        code += (f"before = peak()\ntry:\n    {action}\n    print('ok', end='')\n"
                 "except Exception as e:\n    print(type(e).__name__, str(e).replace('\\n', ' '), end='')\n"
                 "print(' grew_kb', peak() - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    lines = out.stdout.splitlines()
    assert len(lines) == len(actions), out.stdout + out.stderr
    return [(m.strip(), int(kb) / 1024) for m, kb in (line.rsplit(" grew_kb ", 1) for line in lines)]


def huge_jpeg(path: Path, side: int = 16000) -> Path:
    """A real small JPEG whose frame header (SOF0) claims side x side pixels."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))
    return path


IMPORTS = ("import numpy as np, torch\nfrom PIL import Image\nfrom minglm4v import video\n"
           "from minglm4v.patchify import load_image, preprocess\n")
FRAME_ROUTES = {  # frames that cost nothing to make (broadcast views) but would cost GBs to stack
    "array": "np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (3000, 4000, 4000, 3))",
    "tensor": "torch.zeros((1, 1, 1, 3), dtype=torch.uint8).expand(3000, 4000, 4000, 3)",
    "list of arrays": "[np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (4000, 4000, 3))] * 3000",
    "list of PIL images": "[Image.new('L', (4000, 4000))] * 3000",
}


@pytest.fixture(scope="module")
def cheap_routes(tmp_path_factory) -> dict[str, tuple[str, float]]:
    """Every huge input that costs nothing to make, tried in one interpreter: case -> (error, MB grown)."""
    tmp = tmp_path_factory.mktemp("huge")
    jpeg = str(huge_jpeg(tmp / "huge.jpg"))
    y4m = tmp / "huge.y4m"  # a raw clip whose header says 16000x16000
    y4m.write_bytes(b"YUV4MPEG2 W16000 H16000 F12:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    actions = {"jpeg as image": f"load_image({jpeg!r})", "jpeg as video": f"video.load_video({jpeg!r})",
               "jpeg preprocessed as video": f"video.preprocess_videos([{jpeg!r}])",
               "y4m": f"video.preprocess_videos([{str(y4m)!r}])",
               "grid text": "video.frame_blocks_text([1, 1 << 15, 1 << 15], [0.0])",  # 2^28 tokens of text
               **{f"frames {k}": f"video.load_video({v}, fps=30)" for k, v in FRAME_ROUTES.items()}}
    return dict(zip(actions, grown(IMPORTS, *actions.values())))


def test_huge_jpeg_refused_as_image_and_as_video(cheap_routes, monkeypatch, tmp_path):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only to read the header here
    with Image.open(huge_jpeg(tmp_path / "huge.jpg")) as im:
        assert im.size == (16000, 16000)
    msg, mb = cheap_routes["jpeg as image"]
    assert msg.startswith("ImageError") and "256000000 pixels" in msg and "huge.jpg" in msg and mb < 50, (msg, mb)
    for case in ("jpeg as video", "jpeg preprocessed as video"):
        msg, mb = cheap_routes[case]
        assert msg.startswith("VideoError") and "still image" in msg and mb < 50, (msg, mb)


def test_huge_video_frames_refused_from_the_header(cheap_routes):
    msg, mb = cheap_routes["y4m"]
    assert msg.startswith("VideoError") and "16000x16000" in msg and "huge.y4m" in msg and mb < 50, (msg, mb)


@pytest.mark.parametrize("route", list(FRAME_ROUTES))
def test_frames_are_size_checked_before_stacking(cheap_routes, route):
    msg, mb = cheap_routes[f"frames {route}"]
    # 3000 frames at 30 fps = 100 s -> 200 kept frames of 4000x4000 = 3.2 G pixels
    assert msg.startswith("VideoError") and "200 frames of 4000x4000" in msg and mb < 50, (msg, mb)


def test_one_huge_frame_is_refused():
    frames = [np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))] * 2
    expect(lambda: video.load_video(frames, fps=2), "20000x20000", error=VideoError)


def test_in_memory_images_cost_bounded_memory():
    """A 20000x20000 PIL image is refused from its size (nothing converted). A 6000x6000 RGBA one (under the limit)
    is converted a block of rows at a time: the RGB copy PIL keeps (4 bytes a pixel) is the only full-size one,
    where compositing the whole image at once cost 14 bytes a pixel."""
    (msg, mb), (ok, mb2) = grown(IMPORTS + "big = Image.new('L', (20000, 20000))", "preprocess(big)",
                                 "del big; im = Image.new('RGBA', (6000, 6000), (10, 200, 30, 128)); "
                                 "pv, grid = preprocess(im); assert grid.tolist() == [[1, 156, 156]]")
    assert msg.startswith("ImageError") and "20000x20000" in msg and mb < 50, (msg, mb)
    assert ok == "ok" and mb2 < 7 * 36e6 / 2**20, (ok, mb2)  # < 7 bytes a pixel of the 36 M


GRIDS = {
    "1e9 frames": ([[10**9, 2, 2]], "patches"),
    "float": ([[1e9, 2, 2]], "whole numbers"),
    "float tensor": (torch.tensor([[1.0, 2.0, 2.0]]), "integer"),
    "negative": ([[1, -2, 2]], "positive"),
    "bool": ([[True, 2, 2]], "whole numbers"),
    "two numbers": ([[1, 2]], "three numbers"),
    "a string": ("1,2,2", "[t, h, w]"),
}


@pytest.mark.parametrize("case", list(GRIDS))
def test_bad_grids_are_refused_before_allocation(case):
    grid, needle = GRIDS[case]
    expect(lambda: check_grid(grid, "video_grid_thw", VideoError), needle, error=VideoError)


def test_grid_takers_check_first(cheap_routes):
    msg, mb = cheap_routes["grid text"]
    assert msg.startswith("VideoError") and f"{MAX_GRID_PATCHES:,}" in msg and mb < 50, (msg, mb)
    expect(lambda: video.frame_blocks_text([10**9, 2, 2], [0.0]), "patches", error=VideoError)
    expect(lambda: num_image_tokens([[10**9, 2, 2]]), "patches", error=ImageError)
    expect(lambda: unpatchify(torch.zeros(4, 1176), [10**9, 2, 2]), "patches", error=ImageError)
    expect(lambda: unpatchify(torch.zeros(4, 1176), [1, 4, 4]), "do not fit the grid", error=ImageError)
    expect(lambda: video.frame_blocks_text([2, 3, 4], [0.0, 1.0]), "multiples of the merge size", error=VideoError)
    assert num_image_tokens(torch.tensor([[1, 4, 4], [1, 2, 6]])).tolist() == [4, 3]


def test_bad_sampling_settings_are_refused():
    expect(lambda: video.sample_indices(100, 30, sample_fps=1e9), "at most 65,536 frames", error=VideoError)
    expect(lambda: video.sample_indices(100, 30, max_duration=float("inf")), "max_duration=inf", error=VideoError)
    expect(lambda: video.sample_indices(100, "30"), "fps='30'", error=VideoError)
    expect(lambda: video.sample_indices(True, 30), "at least one frame", error=VideoError)


# ---------------------------------------------------------------------- messages name the real input

def test_aspect_ratio_error_names_the_real_size():
    msg = expect(lambda: preprocess(np.zeros((1, 250, 3), np.uint8)), "aspect ratio", "250x1", error=ImageError)
    assert "7000x28" not in msg  # the size after the small-image upscale is not the user's


def test_video_sizes_and_settings_raise_video_errors():
    wide = video.load_video(np.zeros((4, 2, 500, 3), np.uint8), fps=2)
    for fn, needle in [(lambda: video.preprocess_videos([wide]), "aspect ratio 250.0 of a 500x2"),
                       (lambda: video.video_size(1, 100, 100), "temporal_patch_size"),
                       (lambda: video.preprocess_videos([wide], min_pixels=10, max_pixels=5),
                        "min_pixels <= max_pixels"),
                       (lambda: video.preprocess_videos([wide], patch_size=0), "patch_size=0"),
                       (lambda: video.preprocess_videos([wide], merge_size=2.5), "merge_size=2.5")]:
        with pytest.raises(VideoError, match=needle) as info:
            fn()
        assert not isinstance(info.value, ImageError)
    with pytest.raises(ImageError, match="temporal_patch_size"):
        smart_resize(1, 100, 100)  # the image route keeps its ImageError


# ---------------------------------------------------------------------- no silent wrong results

@pytest.fixture(scope="module")
def hf_processor():
    import transformers

    return transformers.Glm4vImageProcessorPil()


def hf_pixels(proc, image):
    return proc(image, return_tensors="pt")["pixel_values"]


def test_transparent_premultiplied_image_is_white_like_rgba(hf_processor):
    """Fully transparent: RGBA is white in transformers and here; RGBa (premultiplied) is white here too, where
    transformers converts it straight to RGB (black). Opaque RGBa pixels are the same in both."""
    rgba = Image.new("RGBA", (40, 30), (200, 30, 30, 0))
    white = preprocess(Image.new("RGB", (40, 30), (255, 255, 255)))[0]
    assert torch.equal(preprocess(rgba)[0], white) and torch.equal(hf_pixels(hf_processor, rgba), white)
    premultiplied = rgba.convert("RGBa")
    assert np.asarray(premultiplied).max() == 0  # every value, alpha included, is 0
    assert torch.equal(preprocess(premultiplied)[0], white)
    assert not torch.equal(hf_pixels(hf_processor, premultiplied), white)  # the documented difference
    la = Image.new("LA", (40, 30), (90, 0)).convert("La")
    assert torch.equal(preprocess(la)[0], white)
    rng = np.random.default_rng(3)
    opaque = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).convert("RGBA").convert("RGBa")
    assert torch.equal(preprocess(opaque)[0], hf_pixels(hf_processor, opaque))


def test_transparent_video_frames_are_white():
    frames = [Image.new("RGBA", (56, 56), (200, 30, 30, 0)).convert("RGBa")] * 4
    v = video.load_video(frames, fps=2)
    assert v.frames.min() == 255  # white, as the same picture given as an image


STILL = {
    "png": lambda p: p.write_bytes(png_bytes()),
    "jpeg": lambda p: Image.new("RGB", (64, 48), (255, 0, 0)).save(p, "JPEG"),
    "webp": lambda p: Image.new("RGB", (64, 48), (255, 0, 0)).save(p, "WEBP"),
    "bmp": lambda p: Image.new("RGB", (64, 48), (255, 0, 0)).save(p, "BMP"),
    "one-frame gif": lambda p: Image.new("RGB", (64, 48), (255, 0, 0)).save(p, "GIF"),
}


@pytest.mark.parametrize("kind", list(STILL))
def test_still_image_is_not_a_video(tmp_path, kind):
    path = tmp_path / "clip.mp4"  # the name does not matter: the content does
    STILL[kind](path)
    expect(lambda: video.load_video(path), "clip.mp4", "still image", "image item", error=VideoError)
    expect(lambda: video.preprocess_videos([path]), "still image", error=VideoError)


def test_animated_gif_is_a_video(tmp_path):
    frames = [Image.new("RGB", (64, 48), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0), (9, 9, 9)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=500, loop=0)
    v = video.load_video(tmp_path / "anim.gif")
    assert v.frames.shape[1:] == (48, 64, 3) and len(v.indices) >= 2


# ---------------------------------------------------------------------- every source kind

def test_load_image_sources(tmp_path):
    rng = np.random.default_rng(5)
    hwc = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(hwc).save(tmp_path / "x.png")
    want = preprocess(hwc)[0]
    sources = [str(tmp_path / "x.png"), tmp_path / "x.png", (tmp_path / "x.png").as_uri(), Image.fromarray(hwc),
               hwc, torch.from_numpy(hwc), torch.from_numpy(hwc).permute(2, 0, 1)]  # (H, W, C) and (C, H, W)
    for source in sources:
        assert torch.equal(preprocess(load_image(source))[0], want), type(source)
    gray = rng.integers(0, 256, (30, 44), dtype=np.uint8)
    assert torch.equal(preprocess(load_image(torch.from_numpy(gray)))[0], preprocess(gray)[0])
    pil = Image.fromarray(hwc)
    assert load_image(pil) is pil and load_image(hwc) is hwc  # used as given


BAD_IMAGE_SOURCES = {
    "int": (3, "got int"),
    "bytes": (b"\x89PNG", "got bytes"),
    "float tensor": (torch.zeros(3, 30, 30), "dtype torch.float32"),
    "ambiguous tensor": (torch.zeros(3, 30, 3, dtype=torch.uint8), "channels could be first or last"),
    "5-channel tensor": (torch.zeros(5, 30, 30, dtype=torch.uint8), "(H, W, C)"),
    "float array": (np.zeros((30, 30, 3), np.float32), "dtype float32"),
    "huge tensor": (torch.zeros(1, dtype=torch.uint8).expand(3, 20000, 20000), "20000x20000"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGE_SOURCES))
def test_bad_image_sources(case):
    source, needle = BAD_IMAGE_SOURCES[case]
    expect(lambda: load_image(source), needle, error=ImageError)


def test_load_video_sources(data_dir):
    every = video_io.read_frames(data_dir / "shapes.mp4", range(72))  # (72, H, W, 3)
    want = video.load_video(data_dir / "shapes.mp4")
    sources = [every, torch.from_numpy(every), list(every), [torch.from_numpy(f) for f in every],
               [Image.fromarray(f) for f in every]]
    for source in sources:
        got = video.load_video(source, fps=12)
        assert got.indices == want.indices and np.array_equal(got.frames, every[want.indices]), type(source)
    assert video.load_video(want) is want
    assert video.load_video(str(data_dir / "shapes.mp4"), size=(56, 84)).frames.shape == (12, 56, 84, 3)
    small = video.load_video(every, fps=12, size=(56, 84))
    assert np.array_equal(small.frames, video_io.resize_frames(every[want.indices], 56, 84).permute(0, 2, 3, 1).numpy())


BAD_VIDEO_SOURCES = {
    "frames without fps": (lambda: video.load_video(np.zeros((4, 30, 30, 3), np.uint8)), "needs their frame rate"),
    "an int": (lambda: video.load_video(3), "got int"),
    "float tensor": (lambda: video.load_video(torch.zeros(4, 30, 30, 3), fps=2), "(T, H, W, 3) uint8"),
    "RGBA frames": (lambda: video.load_video([np.zeros((30, 30, 4), np.uint8)] * 2, fps=2), "frame 0 has shape"),
    "mixed sizes": (lambda: video.load_video([np.zeros((30, 30, 3), np.uint8), Image.new("RGB", (31, 30))], fps=2),
                    "share one size"),
    "a dict frame": (lambda: video.load_video([{}], fps=2), "frame 0 is a dict"),
    "no frames": (lambda: video.load_video([], fps=2), "no frames"),
    "nan fps": (lambda: video.load_video([np.zeros((30, 30, 3), np.uint8)], fps=float("nan")), "fps=nan"),
    "bad SampledVideo": (lambda: video.preprocess_videos([video.SampledVideo(np.zeros((3, 30, 30)), [0], 2.0, 1)]),
                         "SampledVideo needs frames"),
    "a list as one video": (lambda: video.preprocess_videos([[np.zeros((30, 30, 3), np.uint8)]]), "got list"),
}


@pytest.mark.parametrize("case", list(BAD_VIDEO_SOURCES))
def test_bad_video_sources(case):
    fn, needle = BAD_VIDEO_SOURCES[case]
    expect(fn, needle, error=VideoError)


def test_full_size_frames_of_a_file_meet_the_clip_limit(monkeypatch, data_dir):
    from minglm4v import media_limits

    monkeypatch.setattr(media_limits, "MAX_CLIP_PIXELS", 12 * 192 * 144 - 1)  # one pixel short of shapes.mp4's sample
    clip = data_dir / "shapes.mp4"
    expect(lambda: video.load_video(clip), "12 frames of 192x144", "size=(h, w)", error=VideoError)
    assert video.load_video(clip, size=(56, 84)).frames.shape == (12, 56, 84, 3)  # resized as decoded: never held
    assert video.preprocess_videos([clip]).video_grid_thw.tolist() == [[6, 10, 14]]


def test_hostile_pixel_budgets_are_refused_before_allocation(monkeypatch):
    """A preprocessor file may ask for any budget: the grid it would make is checked before its pixels exist."""
    from minglm4v import media_limits

    tiny = np.zeros((30, 30, 3), np.uint8)
    expect(lambda: preprocess(tiny, min_pixels=10**12, max_pixels=10**12), "image 0", "lower the pixel budget",
           error=ImageError)
    frames = video.load_video(np.zeros((4, 30, 30, 3), np.uint8), fps=2)
    expect(lambda: video.preprocess_videos([frames], min_pixels=10**12, max_pixels=10**12), "video 0",
           "lower the pixel budget", error=VideoError)
    monkeypatch.setattr(media_limits, "MAX_BATCH_PATCHES", 2 * 36)  # two 84x84 images: 36 patches each
    assert preprocess([tiny, tiny])[0].shape == (72, 1176)
    expect(lambda: preprocess([tiny] * 3), "108 patch rows", error=ImageError)
    expect(lambda: video.preprocess_videos([frames] * 3), "video 2", "patch rows", error=VideoError)
