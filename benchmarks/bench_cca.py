"""CCA inference and frozen-trunk training speed; prints one JSON object.

1. ``embed_all`` (every one of K = 8 attributes) against ``embed`` (one attribute) on the same batch, timed
   interleaved in the same run, for the demo and paper presets of ``cca1`` and ``cca2``. Blocks 1..L-1 and
   the keys/values of the last block are shared by all attributes, so the ratio should stay near 1 (a naive
   loop of ``embed`` over the attributes is ~K, and running the whole conditional last block once per
   attribute (``embed_all_reference``) is in between); also checks that ``embed_all`` equals the
   straightforward computation within 1e-5.
2. Frozen-trunk vs full fine-tuning: seconds per training step (a batch of triplets, forward, conditioned
   triplet loss, backward, Adam step) with the trunk's features read from a cache against running the
   whole network, plus the one-off cost of caching an image.

    .venv/bin/python benchmarks/bench_cca.py [--threads 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from profashion.models import build_model
from profashion.train.trainer import triplet_loss

K = 8


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_embed_all(name: str, preset: str, batch: int, repeat: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, preset, [5] * K).eval()
    size = model.config.image_size
    x = torch.randn(batch, 3, size, size)
    ids = torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        model.embed(x[:1], ids[:1])  # first-call overheads
        fast = model.embed_all(x)
        reference = model.embed_all_reference(x)
        t_one, t_all, t_ref = [], [], []
        for _ in range(repeat):  # interleaved so that load changes hit all three alike
            t_one.append(_median_time(lambda: model.embed(x, ids), 1))
            t_all.append(_median_time(lambda: model.embed_all(x), 1))
            t_ref.append(_median_time(lambda: model.embed_all_reference(x), 1))
    one, all_, ref = statistics.median(t_one), statistics.median(t_all), statistics.median(t_ref)
    return {"model": name, "preset": preset, "image_size": size, "batch": batch, "attributes": K,
            "embed_one_attribute_s": round(one, 4), "embed_all_s": round(all_, 4),
            "per_condition_last_block_s": round(ref, 4),
            "ratio_embed_all_to_one": round(all_ / one, 3),
            "ratio_per_condition_last_block_to_one": round(ref / one, 3),
            "ratio_naive_loop_to_one": float(K),
            "max_abs_diff_vs_straightforward": float((fast - reference).abs().max())}


def bench_frozen(name: str, preset: str, triplets: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, preset, [5] * K).train()
    size = model.config.image_size
    x = torch.randn(3 * triplets, 3, size, size)
    attrs = torch.randint(0, K, (triplets,)).repeat(3)

    def step(opt, inputs, forward):
        emb = forward(inputs, attrs)
        a, p, n = emb.split(triplets)
        loss = triplet_loss(a, p, n, 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    full_opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    step(full_opt, x, model.embed)  # warm-up call
    t_full = _median_time(lambda: step(full_opt, x, model.embed), steps)

    model.backbone.requires_grad_(False)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = model.trunk_features(x)  # the cache (computed once per training image)
    t_cache = (time.perf_counter() - t0) / len(x)
    head_opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    step(head_opt, feats, model.embed_from_trunk)
    t_frozen = _median_time(lambda: step(head_opt, feats, model.embed_from_trunk), steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": name, "preset": preset, "image_size": size, "triplets_per_step": triplets,
            "full_step_s": round(t_full, 4), "frozen_step_s": round(t_frozen, 4),
            "speedup": round(t_full / t_frozen, 1), "cache_s_per_image": round(t_cache, 5),
            "trainable_parameters_frozen": trainable,
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machines here are shared)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--demo-batch", type=int, default=32)
    ap.add_argument("--paper-batch", type=int, default=2)
    ap.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets = [("demo", args.demo_batch)] + ([] if args.skip_paper else [("paper", args.paper_batch)])
    out = {"threads": args.threads, "embed_all": [], "frozen_trunk": []}
    for preset, batch in presets:
        for name in ("cca1", "cca2"):
            out["embed_all"].append(bench_embed_all(name, preset, batch, args.repeat))
    out["frozen_trunk"].append(bench_frozen("cca2", "demo", triplets=32, steps=args.repeat))
    if not args.skip_paper:
        out["frozen_trunk"].append(bench_frozen("cca2", "paper", triplets=2, steps=max(2, args.repeat // 2)))
    out["ok"] = all(r["ratio_embed_all_to_one"] <= 1.2 and r["max_abs_diff_vs_straightforward"] <= 1e-5
                    for r in out["embed_all"])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
