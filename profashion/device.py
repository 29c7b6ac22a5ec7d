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
