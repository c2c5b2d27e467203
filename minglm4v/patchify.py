"""From pixels to patches: what GLM-4.1V's image processor does before the vision tower sees an image.

Mirrors transformers' `Glm4vImageProcessor` in its PIL implementation (`Glm4vImageProcessorPil` in v5, the "slow"
processor of 4.5x), docs/glm41v.md §2:

    image --RGB--> (H, W, 3) uint8 --smart_resize + PIL bicubic--> (h, w, 3) uint8
          --/255, (x - mean) / std--> (3, h, w) float32 --duplicate along time--> (2, 3, h, w)
          --cut into 14x14x2 patches, merge-window order--> pixel_values (N, 1176),  grid (t, h/14, w/14)

Shape legend: T frames, C channels, t h w the patch grid (t = T / temporal_patch_size), m the merge size,
p the patch size, N = t*h*w patches, each a row of C*tp*p*p numbers.

Decisions (documented in chapter 01):
  * EXIF orientation: `load_image(path)` applies it (as transformers' `load_image` does), so a photo is upright the
    way a viewer shows it. A PIL image or array handed to `preprocess` is used exactly as given.
  * Conversion to RGB (transparency onto white, 16-bit scaled to 8 bits, ...) is `rgb.py`'s.
  * Images smaller than 28 px on a side are first scaled up so the short side is 28 (transformers v5 does the same).
  * Files are opened by us and handed to PIL as file objects; URLs are refused unless `allow_download=True`
    (`media_files.py`).
  * Memory stays bounded: every route (file header, PIL image, array, tensor) meets `media_limits.MAX_DECODE_PIXELS`
    (PIL's decompression-bomb limit, 179 M pixels) before any conversion; conversion goes a block of rows at a time
    in uint8, and all float work happens after the resize, on at most `max_pixels` pixels.
  * Animated images (GIF, APNG, WebP): the first frame is used, with a warning that says so.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageError
from .media_files import local_file, open_regular
from .media_limits import MAX_DECODE_PIXELS, check_grid, check_picture
from .rgb import ImageLike, check_array_image, to_rgb_image

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP mean, per RGB channel
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)  # CLIP std
MIN_PIXELS = 12544  # 112 * 112: preprocessor_config.json "shortest_edge" (a pixel count, not an edge)
MAX_PIXELS = 9633792  # 14*14*2*2*2*6144: preprocessor_config.json "longest_edge"
MAX_ASPECT_RATIO = 200

# ---------------------------------------------------------------------- sizes

def smart_resize(num_frames: int, height: int, width: int, *, factor: int = 28, temporal_factor: int = 2,
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                 error: type[Exception] = ImageError) -> tuple[int, int]:
    """The (h, w) an image of `height` x `width` is resized to: multiples of `factor` (= patch * merge), with
    num_frames * h * w kept inside [min_pixels, max_pixels] and the aspect ratio kept as well as possible.
    Bad sizes raise `error` (video.video_size passes VideoError)."""
    if num_frames < temporal_factor:
        raise error(f"num_frames={num_frames} is less than temporal_patch_size={temporal_factor}")
    if height <= 0 or width <= 0:
        raise error(f"image of size {width}x{height} (width x height) is empty; give an image with pixels")
    real = f"{width}x{height}"  # the size as given, named in the errors below
    if height < factor or width < factor:  # tiny image: scale up so that the short side is `factor`
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise error(f"aspect ratio {max(height, width) / min(height, width):.1f} of a {real} (width x height) "
                    f"picture exceeds {MAX_ASPECT_RATIO}; crop or pad it first")
    # Python's round() rounds halves to even: 70 / 28 = 2.5 -> 2
    h, w = round(height / factor) * factor, round(width / factor) * factor
    t = round(num_frames / temporal_factor) * temporal_factor
    if t * h * w > max_pixels:  # too big: shrink by beta, round down
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:  # too small: grow by beta, round up
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def num_image_tokens(grid_thw: torch.Tensor | Sequence[int], merge_size: int = 2) -> int | torch.Tensor:
    """Placeholder tokens for a grid (t, h, w): t*h*w / m^2. Works on one grid or a (n, 3) tensor."""
    check_grid(grid_thw, "image_grid_thw", ImageError, merge_size)
    g = torch.as_tensor(grid_thw)
    n = g.prod(-1) // merge_size**2
    return int(n) if n.ndim == 0 else n


# ---------------------------------------------------------------------- reading images

def load_image(source, *, allow_download: bool = False) -> ImageLike:
    """An image source -> a PIL image or an (H, W[, C]) uint8/uint16 array, ready for `preprocess`.

    Accepted: a path (str or pathlib.Path) or a `file://` URL, read with `read_image_file`; a PIL image (returned
    as it is); a numpy array (H, W) or (H, W, C), C = 1, 3 or 4 (checked, returned as it is); a torch tensor
    (C, H, W) as torchvision lays images out, or (H, W, C), or (H, W), uint8 (returned as a numpy array). An
    http(s) URL is refused unless `allow_download=True`: then it is downloaded (at most
    media_files.MAX_DOWNLOAD_BYTES) to a temporary file that is removed once the image is read."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        check_array_image(source)
        return source
    if isinstance(source, torch.Tensor):
        return _tensor_image(source)
    if isinstance(source, (str, os.PathLike)):
        with local_file(source, "image", ImageError, allow_download) as (path, shown):
            return read_image_file(path, shown)
    raise ImageError(f"an image source must be a path, a file:// URL, a PIL image, a numpy array or a torch tensor, "
                     f"got {type(source).__name__}")


def read_image_file(path: str | Path, shown: str | None = None) -> Image.Image:
    """Open a local image file, apply its EXIF orientation, and return it fully read (the first frame if animated).

    We open the file and hand PIL the open file object. The size is checked from the header before any pixel is
    decoded (media_limits.MAX_DECODE_PIXELS)."""
    path = Path(path)
    shown = shown or str(path)
    with open_regular(path, "image", ImageError, shown) as f:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
                with Image.open(f) as im:  # reads the header only
                    check_picture(*im.size, f"image {shown}", ImageError)
                    frames = getattr(im, "n_frames", 1)
                    if frames > 1:
                        warnings.warn(f"{shown} is animated ({frames} frames); using its first frame", stacklevel=3)
                    im.seek(0)
                    im.load()
                    return ImageOps.exif_transpose(im)
        except Image.DecompressionBombError as e:  # PIL refuses the very largest files while reading the header
            raise ImageError(f"image {shown} is larger than minglm4v decodes ({MAX_DECODE_PIXELS:,} pixels): {e} "
                             "Downscale it first.") from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            if isinstance(e, ImageError):
                raise
            raise ImageError(f"cannot read image {shown}: {e}") from e


def _tensor_image(x: torch.Tensor) -> np.ndarray:
    """A uint8 tensor (C, H, W), (H, W, C) or (H, W) -> a numpy (H, W[, C]) array; ambiguous layouts are refused."""
    if x.dtype != torch.uint8:
        raise ImageError(f"tensor image of dtype {x.dtype}: expected uint8 (0..255); for floats in [0, 1] pass "
                         "(x * 255).round().to(torch.uint8)")
    if x.ndim == 3:
        first, last = x.shape[0] in (1, 3, 4), x.shape[2] in (1, 3, 4)
        if first and last:
            raise ImageError(f"tensor image of shape {tuple(x.shape)}: channels could be first or last; pass a "
                             "numpy (H, W, C) array instead")
        if first:
            x = x.permute(1, 2, 0)  # (C, H, W) -> (H, W, C), a view
    a = x.detach().cpu().numpy()
    check_array_image(a)
    return a


# ---------------------------------------------------------------------- patches

def patchify(frames: np.ndarray | torch.Tensor, patch_size: int = 14, temporal_patch_size: int = 2,
             merge_size: int = 2, out: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T, C, H, W) normalised frames -> pixel_values (t*h*w, C*tp*p*p) and the grid (t, h, w).

    Rows are ordered temporal patch -> merged row -> merged column -> row inside the m x m window -> column inside
    it, so every m*m consecutive rows form one merge window (docs/glm41v.md §2.3). Each row is ordered (c, tp, py, px).
    `out`, if given, is the (t*h*w, C*tp*p*p) tensor to write into (it saves a copy when batching images)."""
    x = torch.as_tensor(frames)
    T, C, H, W = x.shape
    p, tp, m = patch_size, temporal_patch_size, merge_size
    if T % tp:  # pad the time axis by repeating the last frame (a still image becomes tp identical frames)
        pad = tp - T % tp
        x = x.expand(tp, C, H, W) if T == 1 else torch.cat([x, x[-1:].expand(pad, C, H, W)])
    if H % (p * m) or W % (p * m):
        raise ImageError(f"frames of size {H}x{W} are not multiples of patch_size*merge_size={p * m}; "
                         "resize them with smart_resize first")
    t, h, w = x.shape[0] // tp, H // p, W // p
    x = x.reshape(t, tp, C, h // m, m, p, w // m, m, p)  # (t, tp, C, bh, mh, py, bw, mw, px), still a view
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, bh, bw, mh, mw, C, tp, py, px)
    if out is None:
        return x.reshape(t * h * w, C * tp * p * p), (t, h, w)  # (N, C*tp*p*p): the one copy
    out.view(x.shape).copy_(x)
    return out, (t, h, w)


def unpatchify(pixel_values: torch.Tensor, grid_thw: Sequence[int], patch_size: int = 14,
               temporal_patch_size: int = 2, merge_size: int = 2, mean=IMAGE_MEAN, std=IMAGE_STD) -> np.ndarray:
    """The inverse of `patchify` + normalisation for one grid: (N, C*tp*p*p) -> (T, H, W, C) uint8 frames."""
    rows = check_grid(grid_thw, "grid_thw", ImageError, merge_size)
    if len(rows) != 1:
        raise ImageError(f"unpatchify takes the grid of one image or video, got {len(rows)} rows")
    (t, h, w), = rows
    p, tp, m = patch_size, temporal_patch_size, merge_size
    x = torch.as_tensor(pixel_values, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] != t * h * w or x.shape[1] % (tp * p * p):
        raise ImageError(f"pixel_values of shape {tuple(x.shape)} do not fit the grid {[t, h, w]}: expected "
                         f"({t * h * w}, C*{tp * p * p}) rows, one per patch")
    C = x.shape[1] // (tp * p * p)
    x = x.reshape(t, h // m, w // m, m, m, C, tp, p, p)  # (t, bh, bw, mh, mw, C, tp, py, px)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, tp, C, bh, mh, py, bw, mw, px)
    x = x.reshape(t * tp, C, h * p, w * p)  # (T, C, H, W)
    x = x * torch.tensor(std).view(1, C, 1, 1) + torch.tensor(mean).view(1, C, 1, 1)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, H, W, C)


def normalize_lut(mean=IMAGE_MEAN, std=IMAGE_STD) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level per channel, x/255 (computed in float64, as
    transformers), then (x - mean) / std in float32. A pixel has only 256 possible values, so gathering from this
    table gives the same bits as computing the formula pixel by pixel, several times faster."""
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)  # x / 255
    return (levels[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def patchify_rgb(rgb: np.ndarray, lut: np.ndarray, out: np.ndarray, patch_size: int = 14,
                 temporal_patch_size: int = 2, merge_size: int = 2) -> None:
    """One resized still image (h, w, 3) uint8 -> its pixel_values rows, written into `out` (h*w/p^2, 3*tp*p*p).

    The same rows as normalising and then calling `patchify`, in a cheaper order: the patches are cut while the
    pixels are still one byte each, the lookup table turns them into floats in their final place, and the second
    frame of the temporal pair is a copy of the first."""
    h, w, C = rgb.shape
    p, m, tp = patch_size, merge_size, temporal_patch_size
    gh, gw = h // p, w // p
    u8 = rgb.reshape(gh // m, m, p, gw // m, m, p, C)  # (bh, mh, py, bw, mw, px, C)
    u8 = np.ascontiguousarray(u8.transpose(0, 3, 1, 4, 6, 2, 5)).reshape(gh * gw, C, p * p)  # (N, C, py*px)
    rows = out.reshape(gh * gw, C, tp, p * p)  # (N, C, tp, py*px): a view of out
    for c in range(C):
        rows[:, c, 0] = lut[c][u8[:, c]]
    rows[:, :, 1:] = rows[:, :, :1]  # a still image: every frame of the temporal patch is the same


def _height_width(image) -> tuple[int, int]:
    """(H, W) of a PIL image or array, refused here (before any conversion) when empty or too large."""
    if isinstance(image, Image.Image):
        check_picture(image.width, image.height, f"{image.mode} image", ImageError)
        return image.height, image.width
    if isinstance(image, np.ndarray):
        check_array_image(image)
        return image.shape[0], image.shape[1]
    to_rgb_image(image)  # raises the error that says what is wrong with it
    raise AssertionError("unreachable")


def preprocess(images: ImageLike | Sequence[ImageLike], *, min_pixels: int = MIN_PIXELS,
               max_pixels: int = MAX_PIXELS, patch_size: int = 14, temporal_patch_size: int = 2,
               merge_size: int = 2, mean=IMAGE_MEAN, std=IMAGE_STD,
               sixteen_bit: str = "scale") -> tuple[torch.Tensor, torch.Tensor]:
    """One image or a list -> (pixel_values (N, 1176) float32, image_grid_thw (n_images, 3) int64).

    Images are concatenated along N in order; image i owns t*h*w rows where (t, h, w) = image_grid_thw[i]."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    images = list(images)
    if not images:
        raise ImageError("preprocess() got no images")
    if min_pixels <= 0 or max_pixels < min_pixels:
        raise ImageError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, max_pixels={max_pixels}")
    if sixteen_bit not in ("scale", "clip"):
        raise ImageError(f"sixteen_bit={sixteen_bit!r}; use 'scale' or 'clip'")
    sizes = [smart_resize(temporal_patch_size, *_height_width(im), factor=patch_size * merge_size,
                          temporal_factor=temporal_patch_size, min_pixels=min_pixels, max_pixels=max_pixels)
             for im in images]  # the resized (h, w) of each image, from its size alone
    rows_per_image = [h * w // patch_size**2 for h, w in sizes]
    pixel_values = np.empty((sum(rows_per_image), 3 * temporal_patch_size * patch_size**2), np.float32)  # (N, 1176)
    lut = normalize_lut(mean, std)
    start = 0
    for image, (h, w), n in zip(images, sizes, rows_per_image):
        rgb = to_rgb_image(image, sixteen_bit)
        rgb = np.asarray(rgb.resize((w, h), Image.Resampling.BICUBIC))  # (h, w, 3) uint8, PIL's bicubic
        patchify_rgb(rgb, lut, pixel_values[start:start + n], patch_size, temporal_patch_size, merge_size)
        start += n
    grids = [(1, h // patch_size, w // patch_size) for h, w in sizes]  # a still image is one temporal patch
    return torch.from_numpy(pixel_values), torch.tensor(grids, dtype=torch.int64)
