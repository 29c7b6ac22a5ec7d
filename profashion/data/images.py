"""Reading images safely and the preprocessing every model declares.

``load_image`` turns whatever a user hands us (a path, bytes, a PIL image, a numpy array) into an RGB
PIL image: EXIF orientation applied, RGBA composited on white, grayscale / palette / 16-bit converted,
decompression bombs refused. Only the formats the app needs are opened (:data:`IMAGE_FORMATS`): Pillow's other
decoders (EPS would run Ghostscript, PSD, FITS, ...) never see a file. Each problem is one :class:`ImageError`
that says what to do.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs); a 40 Mpx photo is plenty
MAX_ASPECT = 20  # long side / short side; beyond it an image is a strip, not a garment (and its resize would explode)
MAX_SIDE = 4096  # decoded images are reduced (area average) to at most this long side: no model needs more

# The only formats Pillow may open (``Image.open(..., formats=IMAGE_FORMATS)``): the galleries' JPEGs, the synthetic
# PNGs and what a visitor may reasonably upload (the upload store's suffixes, profashion/explorer/share.py). A JPEG with
# multi-picture data (MPO, many phone photos) is opened by the JPEG plugin, so it is accepted too.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
FORMATS_TEXT = "PNG, JPEG, WebP, BMP, GIF or TIFF"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(ValueError):
    """An input that is not a usable image; the message says what was wrong and what to do."""


def check_size(w: int, h: int, name: str = "the image", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a ``w`` x ``h`` image before anything of its size is allocated: no pixels, too many, too thin."""
    if w < 1 or h < 1:
        raise ImageError(f"{name} has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"{name} is {w}x{h} pixels, more than the {max_pixels:,} we accept; "
                         "resize it (e.g. to 1024 px on the long side) and try again")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name} is {w}x{h} pixels, an aspect ratio beyond the {MAX_ASPECT}:1 we accept; "
                         "crop it to the garment and try again")


def open_image(source, name: str | None = None) -> Image.Image:
    """``Image.open`` restricted to :data:`IMAGE_FORMATS` (the file is not decoded yet); a file of another format
    Pillow knows is one ImageError naming that format (``name``: how to call the file), found from its first bytes
    only (no other decoder runs)."""
    try:
        return Image.open(source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        other = refused_format(source)
        if other is None:
            raise
        if name is None:
            name = str(source) if isinstance(source, (str, os.PathLike)) else "the upload"
        raise ImageError(f"{name} is {_an(other)} image; use {FORMATS_TEXT}") from None


def _an(fmt: str) -> str:
    """``"an EPS"``, ``"a PSD"``: the article as the name is read (letter by letter, but FITS, SPIDER, SUN as words)."""
    vowel_sound = fmt[:1] in "AEFHILMNORSX" and fmt not in ("FITS", "SPIDER", "SUN")
    return f"{'an' if vowel_sound else 'a'} {fmt}"


_ALL_FORMATS: dict = {}  # Pillow's openers before restrict_pillow() (to name a refused format)


def restrict_pillow() -> None:
    """Leave Pillow able to open :data:`IMAGE_FORMATS` only, in this whole process (the app calls it as it builds):
    the libraries that open a visitor's upload themselves (Gradio checks an image upload with ``Image.open``) then
    never reach another decoder either (EPS would run Ghostscript). Writing is untouched. Idempotent."""
    Image.init()
    if not _ALL_FORMATS:
        _ALL_FORMATS.update({fmt: Image.OPEN[fmt] for fmt in Image.ID if fmt in Image.OPEN})
    keep = (*IMAGE_FORMATS, "MPO")
    Image.ID[:] = [fmt for fmt in Image.ID if fmt in keep]
    for fmt in list(Image.OPEN):
        if fmt not in keep:
            del Image.OPEN[fmt]


def refused_format(source) -> str | None:
    """The Pillow format a file not in :data:`IMAGE_FORMATS` has, judged by its first 16 bytes with Pillow's own
    prefix checks (no decoder runs), or None when none claims it."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                prefix = f.read(16)
        else:  # Image.open read the stream from its start too
            source.seek(0)
            prefix = source.read(16)
            source.seek(0)
    except (OSError, AttributeError, ValueError):
        return None
    Image.init()
    known = _ALL_FORMATS or {fmt: Image.OPEN.get(fmt) for fmt in Image.ID}
    for fmt, (_, accept) in ((f, o or (None, None)) for f, o in known.items()):
        if fmt in IMAGE_FORMATS or accept is None:
            continue
        try:
            claimed = accept(prefix)
        except Exception:  # a prefix check that cannot read so few bytes claims nothing
            continue
        if claimed and not isinstance(claimed, str):  # a str is Pillow's warning, not a claim
            return fmt
    return None


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``source`` (path, bytes, file object, PIL image or HxW[xC] array) as an RGB PIL image.

    The cost is bounded before decoding (:func:`check_size`), and the decoded image is reduced to
    ``MAX_SIDE`` on its long side in its own mode before any conversion, so memory stays within a few
    times the (reduced) picture.
    """
    if isinstance(source, Image.Image):
        # a picture opened elsewhere: one of another format (an EPS: Ghostscript) is refused before its pixels load
        if source.format is not None and source.format not in (*IMAGE_FORMATS, "MPO"):
            raise ImageError(f"the image is {_an(source.format)} image; use {FORMATS_TEXT}")
        check_size(*source.size, "the image", max_pixels)
        img, exif = _reduced(source), source.getexif()
    elif isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    else:
        name = str(source) if isinstance(source, (str, os.PathLike)) else "the upload"
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise ImageError(f"image not found: {path}")
            if path.is_dir():
                raise ImageError(f"{path} is a folder, not an image file")
            if path.stat().st_size == 0:
                raise ImageError(f"{path} is empty (0 bytes); choose another file")
        elif isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError("the upload is empty (0 bytes); choose an image file")
            source = io.BytesIO(source)
        try:
            with open_image(source, name) as opened:
                check_size(*opened.size, name, max_pixels)
                exif = opened.getexif()
                if opened.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still covers MAX_SIDE
                    s = MAX_SIDE / max(opened.size)
                    if s < 1:
                        opened.draft(None, (max(1, int(opened.width * s)), max(1, int(opened.height * s))))
                opened.load()
                img = _reduced(opened)
                if img is opened:
                    img = opened.copy()
                img.info = dict(opened.info)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to decode safely ({exc}); resize it and try again") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                f"{name} is not an image we can read ({type(exc).__name__}); use {FORMATS_TEXT}"
            ) from exc
    if exif:
        img.getexif().update(exif)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the picture
        pass
    return _to_rgb(img)


def _reduced(img: Image.Image) -> Image.Image:
    """``img`` with at most ``MAX_SIDE`` pixels on its long side (box average by a whole factor), 16-bit and
    integer modes already brought to 8 bits; ``img`` itself when nothing had to change."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    factor = -(-max(img.size) // MAX_SIDE)
    if factor <= 1:
        return img
    if img.mode in ("1", "P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img.reduce(factor)


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-band image as 8-bit "L" (16-bit scaled by 1/257, wider values
    by their range), in row blocks so no float copy of a large image is made."""
    arr = np.asarray(img)
    hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
    out = np.empty(arr.shape, np.uint8)
    for r in range(0, arr.shape[0], 512):
        block = arr[r:r + 512].astype(np.float32)
        out[r:r + 512] = np.clip(block / hi * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit image (what :func:`_reduced` returns) as RGB, transparency composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_rgb(arr: np.ndarray, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4; got shape {arr.shape}")
    check_size(arr.shape[1], arr.shape[0], "the image array", max_pixels)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    else:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    return _to_rgb(_reduced(img))


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its images: resize the short side, centre-crop, normalise.

    The published protocol (PROTOCOL.md) is ``Preprocess(224, 224)`` with ImageNet statistics and a random
    horizontal flip at training time only; demo presets use a lower resolution.
    """

    resize: int = 224
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> Preprocess:
        return cls(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]))

    def _box(self, w: int, h: int) -> tuple[int, int, int, int]:
        s = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * s)), max(self.crop, round(h * s))
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        return nw, nh, left, top

    def _source_box(self, w: int, h: int) -> tuple[float, float, float, float] | None:
        """The region of a ``w`` x ``h`` image that the resize + centre crop keeps, in its own pixels (None when
        no resize is needed). Resampling only that region gives the crop without ever allocating the resized
        whole image (a 100000 x 1 strip resized to 160 px on its short side would be 16 Gpx)."""
        nw, nh, left, top = self._box(w, h)
        if (nw, nh) == (w, h):
            return None
        sx, sy = w / nw, h / nh
        return left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize the short side to ``resize`` and centre-crop ``crop`` x ``crop`` (no normalisation)."""
        img = load_image(img)
        box = self._source_box(*img.size)
        if box is None:
            _, _, left, top = self._box(*img.size)
            return img.crop((left, top, left + self.crop, top + self.crop))
        return img.resize((self.crop, self.crop), Image.BILINEAR, box=box)

    def geometry_mask(self, mask: np.ndarray) -> np.ndarray:
        """The same resize + centre crop for an (H, W) boolean mask (nearest neighbour), so it aligns with
        the model's input and with every map a model's ``explain`` returns."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ImageError(f"a mask must be (H, W), got shape {mask.shape}")
        h, w = mask.shape
        img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        box = self._source_box(w, h)
        if box is None:
            _, _, left, top = self._box(w, h)
            img = img.crop((left, top, left + self.crop, top + self.crop))
        else:
            img = img.resize((self.crop, self.crop), Image.NEAREST, box=box)
        return np.asarray(img) > 127

    def to_tensor(self, img: Image.Image, flip: bool = False) -> torch.Tensor:
        """(3, crop, crop) float tensor, normalised; ``flip`` mirrors it (training augmentation)."""
        arr = np.asarray(self.geometry(img), dtype=np.float32) / 255.0
        if flip:
            arr = arr[:, ::-1]
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (t - mean) / std

    def __call__(self, img) -> torch.Tensor:
        return self.to_tensor(img)

    def batch(self, images) -> torch.Tensor:
        return torch.stack([self.to_tensor(i) for i in images])


PAPER_PREPROCESS = Preprocess(224, 224)
