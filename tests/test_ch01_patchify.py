"""Chapter 01: pixels to patches. Parity with transformers' Glm4vImageProcessor (PIL implementation)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from oracle import assert_close
from PIL import Image

from minglm4v.errors import ImageError
from minglm4v.patchify import (
    load_image,
    normalize_lut,
    num_image_tokens,
    patchify,
    patchify_rgb,
    preprocess,
    smart_resize,
    unpatchify,
)

ATOL = 1e-6  # the bound; in practice the two pipelines agree bit for bit


@pytest.fixture(scope="module")
def hf_processor():
    import transformers

    return transformers.Glm4vImageProcessorPil()


def hf_preprocess(proc, images, min_pixels=12544, max_pixels=9633792):
    out = proc(images, size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def random_image(h, w, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    # smooth-ish content plus noise, so bicubic resampling has something to do
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 7) % 256], -1)
    rgb = np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    if mode == "RGBA":
        im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def check_parity(proc, images, **kw):
    pv, grid = preprocess(images, **kw)
    kw.pop("sixteen_bit", None)
    hpv, hgrid = hf_preprocess(proc, images, **kw)
    assert grid.tolist() == hgrid.tolist()
    assert pv.dtype == torch.float32
    return assert_close(pv, hpv, atol=ATOL, what="pixel_values")


# ---------------------------------------------------------------------- smart_resize by hand (docs/glm41v.md §2.1)

@pytest.mark.parametrize("hw, expected", [
    ((480, 640), (476, 644)),
    ((224, 224), (224, 224)),
    ((336, 336), (336, 336)),
    ((70, 70), (84, 84)),  # 70/28 = 2.5 rounds to 2 (banker's rounding), then the min-pixels branch
    ((1080, 1920), (1092, 1932)),
    ((2160, 3840), (1624, 2912)),
    ((4000, 3000), (2520, 1876)),
])
def test_smart_resize_worked_examples(hw, expected):
    assert smart_resize(2, *hw) == expected


@pytest.mark.parametrize("hw, tokens", [((480, 640), 391), ((224, 224), 64), ((336, 336), 144), ((70, 70), 9),
                                        ((1080, 1920), 2691), ((2160, 3840), 6032), ((4000, 3000), 6030)])
def test_token_counts_worked_examples(hw, tokens):
    h, w = smart_resize(2, *hw)
    assert num_image_tokens((1, h // 14, w // 14)) == tokens


def test_smart_resize_errors():
    with pytest.raises(ImageError, match="aspect ratio"):
        smart_resize(2, 28, 28 * 201)
    with pytest.raises(ImageError, match="empty"):
        smart_resize(2, 0, 50)
    with pytest.raises(ImageError, match="num_frames"):
        smart_resize(1, 100, 100)


# ---------------------------------------------------------------------- flattening order by hand (docs/glm41v.md §2.3)

def test_patchify_row_and_column_order():
    # Four coordinate images (channel, frame, y, x): each patchified alone tells where every value came from
    T, C, H, W, p, m = 2, 3, 56, 84, 14, 2
    c, f, y, x = np.meshgrid(np.arange(C), np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    frames = torch.tensor(np.stack([c, f, y, x], -1)).permute(1, 0, 2, 3, 4)  # (T, C, H, W, 4)
    rows = []
    for k in range(4):
        pv, grid = patchify(frames[..., k].float(), patch_size=p, temporal_patch_size=2, merge_size=m)
        rows.append(pv)
    assert grid == (1, 4, 6)
    cc, ff, yy, xx = rows  # each (24, 1176)
    # column order inside a row: c*392 + tp*196 + py*14 + px
    col = torch.arange(1176)
    assert torch.equal(cc[0], (col // 392).float())
    assert torch.equal(ff[0], (col % 392 // 196).float())
    # row order: merged row bh -> merged column bw -> in-window row mh -> in-window column mw
    for r in range(24):
        bh, bw, mh, mw = r // 12, r % 12 // 4, r % 4 // 2, r % 2
        assert yy[r, 0].item() == (bh * m + mh) * p
        assert xx[r, 0].item() == (bw * m + mw) * p
    assert torch.equal(yy[5, :14 * 14].view(14, 14)[:, 0], torch.arange(14.) + yy[5, 0])


def test_patchify_rgb_is_normalise_then_patchify():
    rgb = np.random.default_rng(11).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    lut = normalize_lut()
    frame = torch.from_numpy(np.stack([lut[c][rgb[:, :, c]] for c in range(3)]))[None]  # (1, 3, H, W)
    want, grid = patchify(frame)
    got = np.empty((24, 1176), np.float32)
    patchify_rgb(rgb, lut, got)
    assert grid == (1, 4, 6) and torch.equal(torch.from_numpy(got), want)


def test_unpatchify_round_trip():
    im = random_image(123, 201, seed=3)
    pv, grid = preprocess(im)
    frames = unpatchify(pv, grid[0])
    h, w = smart_resize(2, 123, 201)
    assert frames.shape == (2, h, w, 3)
    resized = np.asarray(im.resize((w, h), Image.Resampling.BICUBIC))
    assert np.abs(frames[0].astype(int) - resized).max() <= 1  # float32 normalisation round trip
    assert np.array_equal(frames[0], frames[1])  # a still image is two identical frames


# ---------------------------------------------------------------------- parity with transformers

def test_parity_real_photos_at_once(hf_processor, data_dir):
    images = [load_image(data_dir / n) for n in ("cat.png", "coffee.png", "astronaut.png", "rocket.jpg")]
    check_parity(hf_processor, images)


@pytest.mark.parametrize("hw", [(97, 131), (333, 517), (517, 333), (29, 31), (28, 28), (55, 57), (1001, 77)])
def test_parity_odd_sizes(hf_processor, hw):
    check_parity(hf_processor, random_image(*hw, seed=hw[0]))


@pytest.mark.parametrize("hw", [(1, 1), (10, 10), (5, 90), (27, 400)])
def test_parity_tiny_images_are_upscaled(hf_processor, hw):
    check_parity(hf_processor, random_image(*hw, seed=1))


@pytest.mark.parametrize("hw", [(28, 5000), (4000, 30), (15, 2900)])
def test_parity_extreme_aspect_ratios(hf_processor, hw):
    check_parity(hf_processor, random_image(*hw, seed=2))


def test_aspect_ratio_over_limit_is_refused(hf_processor):
    im = random_image(20, 4100)
    with pytest.raises(ImageError, match="aspect ratio"):
        preprocess(im)
    with pytest.raises(ValueError):
        hf_preprocess(hf_processor, im)  # the oracle refuses it too


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "CMYK", "1", "YCbCr"])
def test_parity_modes(hf_processor, mode):
    check_parity(hf_processor, random_image(90, 130, mode=mode, seed=4))


def test_parity_palette_with_transparency(hf_processor):
    im = random_image(64, 80, mode="P", seed=5)
    im.info["transparency"] = 3
    check_parity(hf_processor, im)


def test_parity_arrays(hf_processor):
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, (70, 99, 3), dtype=np.uint8), rng.integers(0, 256, (66, 50, 4), dtype=np.uint8)]
    for im in images:
        check_parity(hf_processor, im)
    gray = rng.integers(0, 256, (45, 60), dtype=np.uint8)  # (H, W): transformers wants it as (H, W, 1)
    pv, grid = preprocess(gray)
    hpv, hgrid = hf_preprocess(hf_processor, gray[:, :, None])
    assert grid.tolist() == hgrid.tolist()
    assert_close(pv, hpv, atol=ATOL, what="pixel_values")


def sixteen_bit_png(h=60, w=90, seed=7):
    a = np.random.default_rng(seed).integers(0, 65536, (h, w)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    im = Image.open(io.BytesIO(buf.getvalue()))
    im.load()
    assert im.mode in ("I;16", "I")
    return im, a


def test_sixteen_bit_clip_matches_transformers(hf_processor):
    im, _ = sixteen_bit_png()
    check_parity(hf_processor, im, sixteen_bit="clip")


def test_sixteen_bit_scale_is_transformers_on_the_8_bit_image(hf_processor):
    im, a = sixteen_bit_png()
    eight = Image.fromarray(np.round(a / 257).astype(np.uint8))
    pv, grid = preprocess(im)  # default: scale 0..65535 onto 0..255
    hpv, hgrid = hf_preprocess(hf_processor, eight)
    assert grid.tolist() == hgrid.tolist()
    assert_close(pv, hpv, atol=ATOL, what="pixel_values")
    clipped, _ = preprocess(im, sixteen_bit="clip")
    assert (clipped - pv).abs().max() > 1.0  # the two policies really differ on full-range data


@pytest.mark.parametrize("min_pixels, max_pixels", [(3136, 50176), (56 * 56, 28 * 28 * 2 * 64), (200_000, 400_000)])
def test_parity_non_default_pixel_budget(hf_processor, min_pixels, max_pixels):
    images = [random_image(300, 451, seed=8), random_image(40, 90, seed=9)]
    check_parity(hf_processor, images, min_pixels=min_pixels, max_pixels=max_pixels)


def test_grid_and_token_count_for_several_images():
    pv, grid = preprocess([random_image(480, 640), random_image(224, 224)])
    assert grid.tolist() == [[1, 34, 46], [1, 16, 16]]
    assert num_image_tokens(grid).tolist() == [391, 64]
    assert pv.shape == (34 * 46 + 16 * 16, 1176)


# ---------------------------------------------------------------------- EXIF and bad input

def test_load_image_applies_exif_orientation(tmp_path):
    im = random_image(40, 100)  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rotated.jpg", exif=exif)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.size == (40, 100)  # portrait, as a viewer shows it
    with Image.open(tmp_path / "rotated.jpg") as raw:
        assert raw.size == (100, 40)
        # preprocess() uses pixels as given: the raw object keeps its stored (landscape) grid
        assert preprocess(raw)[1].tolist() != preprocess(loaded)[1].tolist()


def test_bad_inputs(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ImageError, match="no images"):
        preprocess([])
    with pytest.raises(ImageError, match="dtype float64"):
        preprocess(np.zeros((30, 30, 3)))
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros((30, 30, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="empty"):
        preprocess(np.zeros((0, 30, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="PIL image"):
        preprocess(["cat.png"])


# ---------------------------------------------------------------------- conversion a block of rows at a time

@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "L"])
def test_parity_images_taller_than_one_block(hf_processor, mode):
    """rgb.py converts 512 rows at a time: images of several blocks (and a partial last one) keep bit parity."""
    from minglm4v.rgb import ROWS

    im = random_image(2 * ROWS + 77, 301, mode=mode, seed=12)
    if mode == "P":
        im.info["transparency"] = 7
    check_parity(hf_processor, im)


def test_sixteen_bit_taller_than_one_block(hf_processor):
    im, a = sixteen_bit_png(h=1100, w=90, seed=13)
    check_parity(hf_processor, im, sixteen_bit="clip")
    eight = Image.fromarray(np.round(a / 257).astype(np.uint8))
    assert torch.equal(preprocess(im)[0], preprocess(eight)[0])
    rgba = np.random.default_rng(14).integers(0, 256, (1100, 90, 4), dtype=np.uint8)
    check_parity(hf_processor, rgba)  # arrays: blended onto white in blocks of rows
