"""GPU check of the paper presets: a few hundred conditioned-triplet training steps of each, mixed precision.

    python benchmarks/gpu_check.py                      # every model, 300 steps, batch 32 triplets, CUDA, AMP
    python benchmarks/gpu_check.py --models cca2,asen --steps 100 --batch-size 16
    python benchmarks/gpu_check.py --device cpu --steps 2 --batch-size 2 --warmup-steps 1   # a smoke run

Each paper preset (ResNet-50 / R50+ViT-B/16 hybrid / open_clip ViT-B/32 + B/16 at 224 px, randomly initialised:
nothing is downloaded) is trained with Adam on random 224 px images and random triplets of the model's
attributes under ``torch.autocast`` (bfloat16 where the GPU supports it, else float16 with a gradient scaler).
Prints one JSON object: per model, training images/s (3 images per triplet) after ``--warmup-steps``
untimed steps, peak GPU memory, the loss at the first and last step (finite: the step ran), and the
reference the same run measures: the images/s of a plain float32 step of the same model.

This is a check for machines with a GPU (the project's ``device`` tool); the test suite never depends on it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from profashion.models.base import available_models, build_model

NUM_VALUES = [6, 9, 8, 5, 5, 5, 6, 5]  # FashionAI's eight attributes


def _loss(model, x: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    emb = model(x, attrs.repeat(3))
    a, p, n = emb.float().split(len(attrs))
    loss = F.relu(F.cosine_similarity(a, n) - F.cosine_similarity(a, p) + 0.2).mean()
    return loss + model.regularization()


def run_model(name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(name, "paper", NUM_VALUES).to(device).train()
    size = model.preprocess.crop
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp_dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    b = args.batch_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(3 * b, 3, size, size, generator=gen).to(device)
    attrs = torch.randint(0, len(NUM_VALUES), (b,), generator=gen).to(device)

    def step(amp: bool) -> float:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = _loss(model, x, attrs)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward() if amp else loss.backward()
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return float(loss.detach())

    def timed(amp: bool, steps: int) -> tuple[float, list[float]]:
        for _ in range(args.warmup_steps):
            step(amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = [step(amp) for _ in range(steps)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return 3 * b * steps / (time.perf_counter() - t0), losses

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ips, losses = timed(True, args.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    ref_ips, _ = timed(False, max(1, args.steps // 10))
    return {"images_per_s": round(ips, 1), "fp32_images_per_s": round(ref_ips, 1),
            "amp_speedup": round(ips / ref_ips, 2), "amp_dtype": str(amp_dtype).replace("torch.", ""),
            "peak_memory_gib": round(peak, 2) if peak is not None else None,
            "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
            "finite": all(math.isfinite(v) for v in losses), "image_size": size,
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", help="comma-separated (default: every registered model)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before timing")
    p.add_argument("--batch-size", type=int, default=32, help="triplets per step (3x images)")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run this on a machine with one, or pass --device cpu for a smoke run",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    models = args.models.split(",") if args.models else available_models()
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "steps": args.steps, "batch_triplets": args.batch_size, "models": {}}
    for name in models:
        try:
            out["models"][name] = run_model(name, args, device)
        except torch.OutOfMemoryError:
            out["models"][name] = {"error": f"out of memory at batch {args.batch_size}; pass a smaller --batch-size"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{name}: {out['models'][name]}", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
