"""Any image -> 8-bit RGB, the way transformers' `convert_to_rgb` (image_transforms.py) does it, in bounded memory.

    PIL image, any mode --composite transparency onto white, or convert--> RGB PIL image
    (H, W) / (H, W, C) uint8 or uint16 array, C = 1, 3, 4 --the same rules in integers--> (H, W, 3) uint8

Decisions (documented in chapter 01):
  * Transparency (an alpha band, or a palette/`transparency` entry) is composited onto white, as transformers does.
  * Premultiplied alpha (PIL modes `RGBa`, `La`) is composited onto white too, so a transparent pixel is white in
    every mode. transformers does not see the lower-case `a` band as alpha and converts these modes straight to
    RGB, which makes transparent pixels black (the premultiplied colour of "nothing") while the same picture as
    `RGBA` comes out white. Opaque `RGBa` pixels are the same either way.
  * 16-bit pictures: transformers clips values above 255 (a 16-bit photo comes out almost white). We scale them to
    8 bits instead (round(x / 257)); `sixteen_bit="clip"` reproduces transformers exactly.
  * The size is checked (`media_limits.check_picture`) before anything is converted, and every conversion works a
    block of rows at a time, so the only full-size copy is the RGB result (PIL keeps 4 bytes per RGB pixel).

Shape legend: H W the picture's height and width, C channels.
"""

from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image

from .errors import ImageError
from .media_limits import check_picture

ImageLike = Union[Image.Image, np.ndarray]
ROWS = 512  # rows converted at a time


def to_rgb_image(image: ImageLike, sixteen_bit: str = "scale") -> Image.Image:
    """Any PIL image or (H, W) / (H, W, C) array -> an RGB PIL image (an RGB PIL image without transparency is
    returned as it is)."""
    _check_policy(sixteen_bit)
    if isinstance(image, Image.Image):
        check_picture(image.width, image.height, f"{image.mode} image", ImageError)
        if image.mode == "RGB" and image.info.get("transparency") is None:
            return image
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I") and sixteen_bit == "scale":
            return Image.fromarray(_array_to_rgb(np.asarray(image), "scale", from_pil=True))
        if image.mode == "F":
            raise ImageError("32-bit float images (PIL mode 'F') have no fixed range; convert to 8-bit RGB first")
        return _by_rows(image, _has_alpha(image))
    if isinstance(image, np.ndarray):
        return Image.fromarray(to_rgb_array(image, sixteen_bit))
    raise ImageError(f"expected a PIL image or an HxWxC numpy array, got {type(image).__name__}; "
                     "open files with minglm4v.patchify.load_image(source)")


def to_rgb_array(image: ImageLike, sixteen_bit: str = "scale") -> np.ndarray:
    """Any PIL image or HxW / HxWxC array (C = 1, 3 or 4; uint8 or uint16) -> (H, W, 3) uint8 RGB."""
    _check_policy(sixteen_bit)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, sixteen_bit)
    return np.asarray(to_rgb_image(image, sixteen_bit))


def check_array_image(a: np.ndarray) -> None:
    """Refuse an array that is not an (H, W) or (H, W, C) uint8/uint16 picture of an accepted size."""
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ImageError(f"array image of shape {a.shape}: expected (H, W), or (H, W, C) with C = 1, 3 or 4 "
                         "(channels last)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError(f"array image of shape {a.shape} is empty")
    check_picture(a.shape[1], a.shape[0], "array image", ImageError)
    if a.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"array image of dtype {a.dtype}: expected uint8 (0..255) or uint16; for floats in [0, 1] "
                         "pass (x * 255).round().astype(np.uint8)")


def _check_policy(sixteen_bit: str) -> None:
    if sixteen_bit not in ("scale", "clip"):
        raise ImageError(f"sixteen_bit={sixteen_bit!r}; use 'scale' or 'clip'")


def _has_alpha(im: Image.Image) -> bool:
    bands = im.getbands()
    return "A" in bands or "a" in bands or im.info.get("transparency") is not None


def _by_rows(im: Image.Image, alpha: bool) -> Image.Image:
    """Convert (compositing onto white when `alpha`) ROWS rows at a time into one RGB image: every step is per
    pixel, so the strips give the same bits as converting the whole image at once."""
    out = Image.new("RGB", im.size)
    for top in range(0, im.height, ROWS):
        box = (0, top, im.width, min(top + ROWS, im.height))
        part = im.crop(box)
        if alpha:
            part = part.convert("LA") if part.mode == "La" else part  # PIL converts La to nothing else
            part = part.convert("RGBA")
            white = Image.new("RGBA", part.size, (255, 255, 255, 255))
            part = Image.alpha_composite(white, part)
        out.paste(part.convert("RGB"), box[:2])
    return out


def _array_to_rgb(a: np.ndarray, sixteen_bit: str, from_pil: bool = False) -> np.ndarray:
    if not from_pil:  # a PIL 16-bit image is checked already; its array may be int32 ('I') or big-endian
        check_array_image(a)
    if a.ndim == 2:
        a = a[:, :, None]  # (H, W) -> (H, W, 1)
    out = np.empty(a.shape[:2] + (3,), dtype=np.uint8)  # (H, W, 3)
    for r in range(0, a.shape[0], ROWS):  # a block of rows at a time: no full-size temporaries
        blk = a[r:r + ROWS]
        if blk.dtype != np.uint8 and blk.dtype != np.uint16:  # PIL's 'I' (int32) or big-endian 16-bit
            blk = blk.clip(0, 65535).astype(np.uint16)
        if blk.dtype == np.uint16:
            if sixteen_bit == "scale":
                blk = ((blk.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x / 257): no ties
            else:
                blk = blk.clip(0, 255).astype(np.uint8)
        if blk.shape[2] == 4:  # blend onto white with the alpha channel, as transformers does for arrays:
            # round(alpha/255 * rgb + (1 - alpha/255) * 255) in integers (the exact value is never a tie)
            blk = blk.astype(np.uint32)
            alpha = blk[..., 3:4]
            out[r:r + ROWS] = (alpha * blk[..., :3] + (255 - alpha) * 255 + 127) // 255
        else:
            out[r:r + ROWS] = blk  # C = 1 broadcasts to the three channels
    return out
