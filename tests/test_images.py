"""Odd and bad images: each becomes a usable RGB picture or one clear ImageError."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from profashion.data.images import ImageError, Preprocess, load_image


def _png(img):
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def test_modes_become_rgb(tmp_path):
    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 0))  # fully transparent red -> white
    assert load_image(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)
    gray = Image.new("L", (5, 5), 128)
    assert load_image(_png(gray)).getpixel((2, 2)) == (128, 128, 128)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    p = tmp_path / "deep.png"
    deep.save(p)
    out = load_image(p)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4))
    assert load_image(_png(pal)).mode == "RGB"
    assert load_image(np.zeros((3, 4), np.uint16)).size == (4, 3)
    assert load_image(np.ones((3, 4, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_image(p).size == (20, 40)


@pytest.mark.parametrize(("source", "message"), [
    (b"", "empty"),
    (b"%PDF-1.4 not an image", "not an image we can read"),
    (np.zeros((2, 2, 2)), "must be HxW"),
])
def test_bad_inputs(source, message):
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_bad_paths(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "zero.jpg")
    (tmp_path / "trunc.png").write_bytes(_png(Image.new("RGB", (64, 64), (1, 2, 3)))[:60])
    with pytest.raises(ImageError):
        load_image(tmp_path / "trunc.png")


def test_decompression_bomb_is_refused_before_decoding():
    big = _png(Image.new("L", (9000, 9000)))  # 81 Mpx compresses to a few kB
    with pytest.raises(ImageError, match="more than the"):
        load_image(big)
    with pytest.raises(ImageError, match="more than the"):
        load_image(_png(Image.new("L", (300, 300))), max_pixels=10_000)


def test_preprocess_matches_the_published_recipe():
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    t = Preprocess(224, 224)(img)
    assert t.shape == (3, 224, 224)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(t[:, 0, 0], expected, atol=1e-6)
    small = Preprocess(96, 96).geometry(Image.new("RGB", (60, 80)))
    assert small.size == (96, 96)
    flipped = Preprocess(4, 4).to_tensor(Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)), flip=True)
    plain = Preprocess(4, 4).to_tensor(Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)))
    assert torch.equal(flipped, plain.flip(-1))
