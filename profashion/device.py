"""Devices by name (``auto``, ``cpu``, ``cuda``, ``cuda:N``), for the CLI, the trainer and the app; torch is
imported only when a device is asked for."""

from __future__ import annotations


def resolve_device(name: str):
    """The ``torch.device`` called ``name``; ``auto`` is the GPU when there is one. ValueError (one sentence)
    for an unknown name or a GPU that is not there."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
    return dev


def gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# -- Hugging Face ZeroGPU ---------------------------------------------------------------------------------
# On a ZeroGPU Space (SPACES_ZERO_GPU=true) a GPU is attached only while a function decorated with
# ``spaces.GPU`` runs; the models are placed on "cuda" at start-up (the ``spaces`` package, imported before torch,
# makes that work without a GPU) and run there inside those functions. Elsewhere ``spaces.GPU`` returns the function
# itself, and without the package ``on_gpu`` does the same: the CPU path is unchanged.

def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (the variable the ``spaces`` package reads)."""
    import os

    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def on_gpu(fn=None, *, duration: int | None = None):
    """``spaces.GPU`` (``duration`` seconds at most, its default 60 when None) around ``fn`` when the ``spaces``
    package is installed: a GPU for the call on a ZeroGPU Space, the function itself anywhere else. Usable as
    ``@on_gpu`` or ``@on_gpu(duration=120)``."""
    if fn is None:
        return lambda f: on_gpu(f, duration=duration)
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn, duration=duration) if duration is not None else spaces.GPU(fn)


def serving_device() -> str:
    """The app's device: ``cuda`` on a ZeroGPU Space or with ``PROFASHION_DEVICE=cuda``, else ``cpu`` (the
    default: the shipped models answer in milliseconds on a CPU, and a CPU Space has no GPU)."""
    import os

    if zero_gpu():
        return "cuda"
    return str(resolve_device(os.environ.get("PROFASHION_DEVICE", "cpu")))
