"""Bounds of a training run, derived from this machine's memory: refused in one sentence before anything of
that size is allocated (a batch of 10**9 images or 10**12 triplets an epoch fails at once, not in train.log
after minutes).

The estimates are deliberately rough upper bounds, not predictions: a training triplet holds three images in
memory with their activations (``ACTIVATIONS`` times the input), and a run may use half of the machine's
memory for its batch; the epoch's triplet list (4 int64 each) may use an eighth of it.
"""

from __future__ import annotations

import os

MAX_EPOCHS = 1000  # the published schedules train 50 epochs
MAX_WARMUP_STEPS = 1_000_000
ACTIVATIONS = 16  # activation memory per image, in multiples of its input tensor (float32)
EVAL_ACTIVATIONS = 4  # the same without gradients (validation, caching a frozen trunk)
TRIPLET_BYTES = 4 * 8  # one row of the sampler's triplet list


def machine_memory() -> int:
    """Physical memory of this machine in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a small machine
        return 8 * 2**30


def max_batch_size(image_size: int, memory: int | None = None) -> int:
    """The largest batch of triplets at ``image_size`` px whose images and activations fit half the memory."""
    memory = machine_memory() if memory is None else memory
    per_triplet = 3 * 3 * image_size * image_size * 4 * ACTIVATIONS
    return max(1, memory // 2 // per_triplet)


def max_eval_batch_size(image_size: int, memory: int | None = None) -> int:
    """The largest batch of images at ``image_size`` px embedded without gradients in half the memory."""
    memory = machine_memory() if memory is None else memory
    return max(1, memory // 2 // (3 * image_size * image_size * 4 * EVAL_ACTIVATIONS))


def check_eval_batch_size(eval_batch_size: int, image_size: int, memory: int | None = None) -> None:
    """ValueError when a batch of ``eval_batch_size`` images at ``image_size`` px would not fit half the memory."""
    memory = machine_memory() if memory is None else memory
    most = max_eval_batch_size(image_size, memory)
    if eval_batch_size > most:
        raise ValueError(f"an evaluation batch of {eval_batch_size:,} images at {image_size} px needs more than half "
                         f"of this machine's {memory / 2**30:.0f} GiB of memory; use an eval_batch_size of at most "
                         f"{most:,}")


def max_triplets_per_epoch(memory: int | None = None) -> int:
    memory = machine_memory() if memory is None else memory
    return max(1, memory // 8 // TRIPLET_BYTES)


def check_run_size(epochs: int, batch_size: int, triplets_per_epoch: int, warmup_steps: int, stage2_epochs: int,
                   image_size: int, memory: int | None = None) -> None:
    """ValueError naming the first setting beyond this machine's bounds, the bound and why."""
    memory = machine_memory() if memory is None else memory
    gib = f"{memory / 2**30:.0f} GiB"
    if epochs + stage2_epochs > MAX_EPOCHS:
        raise ValueError(f"{epochs + stage2_epochs} epochs is more than the {MAX_EPOCHS} a run may have; "
                         "train fewer epochs (the published schedule has 50)")
    most = max_batch_size(image_size, memory)
    if batch_size > most:
        raise ValueError(f"a batch of {batch_size:,} triplets at {image_size} px needs more than half of this "
                         f"machine's {gib} of memory; use a batch size of at most {most:,}")
    most = max_triplets_per_epoch(memory)
    if triplets_per_epoch > most:
        raise ValueError(f"{triplets_per_epoch:,} triplets per epoch would not fit in an eighth of this machine's "
                         f"{gib} of memory; use at most {most:,} (the published schedule draws 100,000)")
    if warmup_steps > MAX_WARMUP_STEPS:
        raise ValueError(f"{warmup_steps:,} warm-up steps is more than the {MAX_WARMUP_STEPS:,} allowed")
