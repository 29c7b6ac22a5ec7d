"""Reading images safely and the preprocessing every model declares.

``load_image`` turns whatever a user hands us (a path, bytes, a PIL image, a numpy array) into an RGB
PIL image: EXIF orientation applied, RGBA composited on white, grayscale / palette / 16-bit converted,
decompression bombs refused. Each problem is one :class:`ImageError` that says what to do.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # larger images are refused (decompression bombs), well above any photo we need

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(ValueError):
    """An input that is not a usable image; the message says what was wrong and what to do."""


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``source`` (path, bytes, file object, PIL image or HxW[xC] array) as an RGB PIL image."""
    if isinstance(source, Image.Image):
        img = source
        name = "the image"
    elif isinstance(source, np.ndarray):
        return _array_to_rgb(source)
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
            with Image.open(source) as opened:
                w, h = opened.size
                if w * h > max_pixels:
                    raise ImageError(
                        f"{name} is {w}x{h} pixels, more than the {max_pixels:,} we accept; "
                        "resize it (e.g. to 1024 px on the long side) and try again"
                    )
                opened.load()
                img = opened.copy()
                img.info = dict(opened.info)
                exif = opened.getexif()
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to decode safely ({exc}); resize it and try again") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                f"{name} is not an image we can read ({type(exc).__name__}); upload a JPEG, PNG or WebP file"
            ) from exc
        if exif:
            img.getexif().update(exif)
    if img.width * img.height > max_pixels:
        raise ImageError(f"{name} is {img.width}x{img.height} pixels, more than the {max_pixels:,} we accept")
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{name} has no pixels")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the picture
        pass
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_rgb(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4; got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise ImageError(f"the image is {arr.shape[1]}x{arr.shape[0]} pixels, more than the {MAX_PIXELS:,} we accept")
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    else:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        return Image.fromarray(arr[..., 0], "L").convert("RGB")
    if arr.shape[2] == 4:
        return _to_rgb(Image.fromarray(arr, "RGBA"))
    return Image.fromarray(arr, "RGB")


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

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize the short side to ``resize`` and centre-crop ``crop`` x ``crop`` (no normalisation)."""
        img = load_image(img)
        nw, nh, left, top = self._box(*img.size)
        if (nw, nh) != img.size:
            img = img.resize((nw, nh), Image.BILINEAR)
        return img.crop((left, top, left + self.crop, top + self.crop))

    def geometry_mask(self, mask: np.ndarray) -> np.ndarray:
        """The same resize + centre crop for an (H, W) boolean mask (nearest neighbour), so it aligns with
        the model's input and with every map a model's ``explain`` returns."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ImageError(f"a mask must be (H, W), got shape {mask.shape}")
        h, w = mask.shape
        nw, nh, left, top = self._box(w, h)
        img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.NEAREST)
        return np.asarray(img.crop((left, top, left + self.crop, top + self.crop))) > 127

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
