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
  * Transparency is composited onto white; palette, grayscale, CMYK, ... are converted to RGB (as transformers).
  * 16-bit images: transformers clips values above 255 (a 16-bit photo comes out almost white). We scale them to
    8 bits instead (round(x / 257)); `sixteen_bit="clip"` reproduces transformers exactly.
  * Images smaller than 28 px on a side are first scaled up so the short side is 28 (transformers v5 does the same).
  * Memory stays bounded: `load_image` reads the header first and refuses files of more than `MAX_DECODE_PIXELS`
    (PIL's decompression-bomb limit, 179 M pixels, <= 537 MB decoded) before decoding anything; all float work
    happens after the resize, on at most `max_pixels` pixels.
  * Animated images (GIF, APNG, WebP): the first frame is used, with a warning that says so.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import ImageError

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP mean, per RGB channel
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)  # CLIP std
MIN_PIXELS = 12544  # 112 * 112: preprocessor_config.json "shortest_edge" (a pixel count, not an edge)
MAX_PIXELS = 9633792  # 14*14*2*2*2*6144: preprocessor_config.json "longest_edge"
MAX_ASPECT_RATIO = 200
MAX_DECODE_PIXELS = 2 * 89_478_485  # PIL's decompression-bomb limit: larger files are refused before decoding

ImageLike = Union[Image.Image, np.ndarray]


# ---------------------------------------------------------------------- sizes

def smart_resize(num_frames: int, height: int, width: int, *, factor: int = 28, temporal_factor: int = 2,
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The (h, w) an image of `height` x `width` is resized to: multiples of `factor` (= patch * merge), with
    num_frames * h * w kept inside [min_pixels, max_pixels] and the aspect ratio kept as well as possible."""
    if num_frames < temporal_factor:
        raise ImageError(f"num_frames={num_frames} is less than temporal_patch_size={temporal_factor}")
    if height <= 0 or width <= 0:
        raise ImageError(f"image of size {width}x{height} (width x height) is empty; give an image with pixels")
    if height < factor or width < factor:  # tiny image: scale up so that the short side is `factor`
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ImageError(f"aspect ratio {max(height, width) / min(height, width):.1f} of a {width}x{height} image "
                         f"exceeds {MAX_ASPECT_RATIO}; crop or pad it first")
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
    g = torch.as_tensor(grid_thw)
    n = g.prod(-1) // merge_size**2
    return int(n) if n.ndim == 0 else n


# ---------------------------------------------------------------------- reading images

def load_image(path: str | Path) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and return it fully read (the first frame if animated).

    The size is checked from the header before any pixel is decoded (see MAX_DECODE_PIXELS)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image file {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
                if w == 0 or h == 0:
                    raise ImageError(f"image {path} is empty ({w}x{h} pixels)")
                if w * h > MAX_DECODE_PIXELS:
                    raise ImageError(f"image {path} is {w}x{h} = {w * h:,} pixels, more than minglm4v decodes "
                                     f"({MAX_DECODE_PIXELS:,}); downscale it first (the model sees at most "
                                     f"{MAX_PIXELS // 2:,} pixels of it anyway)")
                frames = getattr(im, "n_frames", 1)
                if frames > 1:
                    warnings.warn(f"{path} is animated ({frames} frames); using its first frame", stacklevel=2)
                im.seek(0)
                im.load()
                return ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:  # PIL refuses the very largest files while reading the header
        raise ImageError(f"image {path} is larger than minglm4v decodes ({MAX_DECODE_PIXELS:,} pixels): {e} "
                         "Downscale it first.") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"cannot read image {path}: {e}") from e


def to_rgb_array(image: ImageLike, sixteen_bit: str = "scale") -> np.ndarray:
    """Any PIL image or HxW / HxWxC array (C = 1, 3 or 4; uint8 or uint16) -> (H, W, 3) uint8 RGB."""
    if sixteen_bit not in ("scale", "clip"):
        raise ImageError(f"sixteen_bit={sixteen_bit!r}; use 'scale' or 'clip'")
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, sixteen_bit)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, sixteen_bit)
    raise ImageError(f"expected a PIL image or an HxWxC numpy array, got {type(image).__name__}; "
                     "open files with minglm4v.patchify.load_image(path)")


def _pil_to_rgb(im: Image.Image, sixteen_bit: str) -> np.ndarray:
    if im.width == 0 or im.height == 0:
        raise ImageError(f"image of size {im.width}x{im.height} is empty")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        if sixteen_bit == "scale":
            a = np.asarray(im)
            return _array_to_rgb(a if a.dtype == np.uint16 else a.clip(0, 65535).astype(np.uint16), "scale")
        return np.asarray(im.convert("RGB"))  # what transformers does: values above 255 saturate
    if im.mode == "F":
        raise ImageError("32-bit float images (PIL mode 'F') have no fixed range; convert to 8-bit RGB first")
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")  # composite transparent pixels onto white
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                          .convert("RGB"))
    return np.asarray(im.convert("RGB"))


def _array_to_rgb(a: np.ndarray, sixteen_bit: str) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]  # (H, W) -> (H, W, 1)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"array image of shape {a.shape}: expected (H, W), or (H, W, C) with C = 1, 3 or 4 "
                         "(channels last)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"array image of shape {a.shape} is empty")
    if a.shape[0] * a.shape[1] > MAX_DECODE_PIXELS:
        raise ImageError(f"array image of {a.shape[1]}x{a.shape[0]} pixels is larger than minglm4v accepts "
                         f"({MAX_DECODE_PIXELS:,} pixels); downscale it first")
    if a.dtype == np.uint16:
        if sixteen_bit == "scale":
            a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x / 257): 65535 -> 255, no ties
        else:
            a = a.clip(0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(f"array image of dtype {a.dtype}: expected uint8 (0..255) or uint16; for floats in [0, 1] "
                         "pass (x * 255).round().astype(np.uint8)")
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:  # blend onto white with the alpha channel, as transformers does for arrays
        # round(alpha/255 * rgb + (1 - alpha/255) * 255) in integers (the exact value is never a tie),
        # a block of rows at a time so a large image needs no large temporary
        out = np.empty(a.shape[:2] + (3,), dtype=np.uint8)
        for r in range(0, a.shape[0], 512):
            blk = a[r:r + 512].astype(np.uint32)
            alpha = blk[..., 3:4]
            out[r:r + 512] = (alpha * blk[..., :3] + (255 - alpha) * 255 + 127) // 255
        return out
    return np.ascontiguousarray(a)


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
    t, h, w = (int(v) for v in grid_thw)
    p, tp, m = patch_size, temporal_patch_size, merge_size
    x = torch.as_tensor(pixel_values, dtype=torch.float32)
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
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        return image.shape[0], image.shape[1]
    to_rgb_array(image)  # raises the error that says what is wrong with it
    raise AssertionError("unreachable")


def to_rgb_image(image: ImageLike, sixteen_bit: str = "scale") -> Image.Image:
    """Like `to_rgb_array`, as a PIL image (an RGB PIL image without transparency is returned as it is)."""
    if isinstance(image, Image.Image) and image.mode == "RGB" and image.info.get("transparency") is None:
        if image.width == 0 or image.height == 0:
            raise ImageError(f"image of size {image.width}x{image.height} is empty")
        return image
    return Image.fromarray(to_rgb_array(image, sixteen_bit))


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
