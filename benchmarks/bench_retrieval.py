"""The retrieval engine's speed: query latency, gallery indexing, search scaling, matmul peak fraction.

Prints one JSON object with a section per measurement; every speed is compared with a reference
measured in the same run.

- ``latency``: p50/p95 of one query (decode + embed the query for one attribute + search) through
  ``RetrievalEngine.search``, for each checkpoint given, on its gallery index;
- ``indexing``: gallery images/s of ``build_index``'s embedding pipeline (decode from disk in threads +
  embed_all) against the bare ``embed_all`` forward over the same images, already decoded and
  normalised, with the same inference backend (best of ``--repeat`` alternating runs), and against the
  plain PyTorch fp32 forward; the engine must reach >= 80% of the forward;
- ``scaling``: search time per query and recall@5 against exact search as the gallery grows
  (10^3 .. 10^6 random unit vectors), exact (flat) vs HNSW vs IVF, fp32 and SQ8;
- ``ann``: the approximate indexes on a real gallery's embeddings, recall@5 against exact search;
- ``peak``: the fraction of this machine's measured fp32 matmul rate (a 2048^3 sgemm) that the paper
  preset's forward reaches, with PyTorch and with ONNX Runtime.

    .venv/bin/python benchmarks/bench_retrieval.py latency --index runs/index/asen --index runs/index/csn
    .venv/bin/python benchmarks/bench_retrieval.py indexing --checkpoint runs/synth-asen/best --dataset data/synth
    .venv/bin/python benchmarks/bench_retrieval.py scaling [--max-n 1000000]
    .venv/bin/python benchmarks/bench_retrieval.py ann --index runs/index/products-asen
    .venv/bin/python benchmarks/bench_retrieval.py peak [--model asen]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _pct(ts, q) -> float:
    return round(1000 * float(np.percentile(ts, q)), 2)


def bench_latency(args) -> dict:
    from profashion.retrieval.search import RetrievalEngine

    out = {}
    rng = np.random.default_rng(0)
    for index in args.index:
        engine = RetrievalEngine()
        name = Path(index).name
        engine.add(name, index, backend=args.backend)
        ix = engine.index(name)
        queries = rng.choice(len(ix), size=min(args.queries, len(ix)), replace=False)
        attrs = rng.integers(0, ix.schema.num_attributes, size=len(queries))
        # an uploaded image: bytes, not a gallery path, so nothing is looked up
        data = [Path(ix.paths[q]).read_bytes() for q in queries]
        engine.search(name, data[0], int(attrs[0]), k=5)  # warm-up
        total, embed, search = [], [], []
        for d, a in zip(data, attrs):
            t0 = time.perf_counter()
            r = engine.search(name, d, int(a), k=5)
            total.append(time.perf_counter() - t0)
            embed.append(r.embed_ms / 1000)
            search.append(r.search_ms / 1000)
        out[name] = {"model": ix.model_name, "gallery": len(ix), "dataset": ix.manifest["dataset"]["name"],
                     "backend": engine.model(name).backend, "queries": len(queries),
                     "p50_ms": _pct(total, 50), "p95_ms": _pct(total, 95),
                     "embed_p50_ms": _pct(embed, 50), "search_p50_ms": _pct(search, 50)}
    return out


def bench_indexing(args) -> dict:
    from profashion.data.loading import to_model_input
    from profashion.data.splits import load_dataset
    from profashion.models.base import load_model
    from profashion.retrieval.accel import Embedder
    from profashion.retrieval.index import embed_images, gallery_items, prefetched_batches

    ds = load_dataset(args.dataset)
    items, _ = gallery_items(ds, args.split)
    paths = items.paths[:args.images]
    out = {}
    for ckpt in args.checkpoint:
        model = load_model(ckpt)
        emb = Embedder(model, args.backend)
        decoded = list(prefetched_batches(paths, model.preprocess, args.batch))
        inputs = [to_model_input(torch.from_numpy(b).permute(0, 3, 1, 2), model.preprocess) for b in decoded]

        def bare(emb=emb, inputs=inputs):
            with torch.no_grad():
                for x in inputs:
                    emb.embed_all(x)

        def pipeline(emb=emb, model=model):
            embed_images(emb, prefetched_batches(paths, model.preprocess, args.batch), len(paths))

        def torch_fp32(inputs=inputs, model=model):
            with torch.no_grad():
                for x in inputs:
                    model.embed_all(x)

        bare()  # warm-up
        torch_fp32()
        best = {"bare": float("inf"), "pipeline": float("inf"), "torch_fp32": float("inf")}
        for _ in range(args.repeat):  # alternate, so all see the same machine load
            for name, fn in (("bare", bare), ("pipeline", pipeline), ("torch_fp32", torch_fp32)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        forward, piped = len(paths) / best["bare"], len(paths) / best["pipeline"]
        plain = len(paths) / best["torch_fp32"]
        out[f"{model.name}:{Path(ckpt).parent.name}"] = {
            "backend": emb.backend, "images": len(paths), "batch": args.batch,
            "pipeline_img_s": round(piped, 1), "bare_forward_img_s": round(forward, 1),
            "pipeline_over_forward": round(piped / forward, 3),
            "torch_fp32_forward_img_s": round(plain, 1), "pipeline_over_torch_fp32": round(piped / plain, 3)}
    return out


def bench_scaling(args) -> dict:
    from profashion.retrieval.index import _search, make_faiss_index, recall_at_k

    rng = np.random.default_rng(0)
    d = args.dim
    out = {"dim": d, "queries": args.queries, "note": "random unit vectors: the hardest case for ANN recall"}
    n = 1000
    sizes = []
    while n <= args.max_n:
        sizes.append(n)
        n *= 10
    base = rng.standard_normal((sizes[-1], d), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    q = base[rng.choice(sizes[-1], size=args.queries, replace=False)] + 0.05 * rng.standard_normal(
        (args.queries, d), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for n in sizes:
        x = base[:n]
        row = {}
        for kind, storage in (("flat", "fp32"), ("flat", "sq8"), ("hnsw", "fp32"), ("ivf", "fp32"), ("ivf", "sq8")):
            t0 = time.perf_counter()
            ix = make_faiss_index(x, kind, storage)
            build = time.perf_counter() - t0
            _search(ix, q[:1], 5)  # warm-up
            ts = []
            for v in q:  # one query at a time, as the app asks (and as GalleryIndex.search_vectors runs it)
                t0 = time.perf_counter()
                _search(ix, v[None], 5)
                ts.append(time.perf_counter() - t0)
            row[f"{kind}-{storage}"] = {"build_s": round(build, 3), "p50_ms": _pct(ts, 50), "p95_ms": _pct(ts, 95),
                                        "recall_at_5": round(recall_at_k(ix, x, q, 5), 2) if kind != "flat"
                                        or storage != "fp32" else 100.0,
                                        "bytes_per_vector": round(_index_bytes(ix) / n, 1)}
        exact = row["flat-fp32"]["p50_ms"]
        for v in row.values():
            v["speedup_vs_exact"] = round(exact / max(v["p50_ms"], 1e-6), 2)
        out[str(n)] = row
    return out


def bench_ann(args) -> dict:
    """Approximate indexes on a real gallery's embeddings: recall@5 against exact search and time per query."""
    from profashion.retrieval.index import GalleryIndex, _search, make_faiss_index, recall_at_k

    gi = GalleryIndex.load(args.index, verify=False)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(gi), size=min(args.queries, len(gi)), replace=False)
    out = {"index": str(args.index), "model": gi.model_name, "items": len(gi)}
    for a, name in enumerate(gi.schema.names):
        x = np.ascontiguousarray(gi.embeddings[:, a], dtype=np.float32)
        q = x[sample]
        row = {}
        for kind, storage in (("flat", "fp32"), ("flat", "sq8"), ("hnsw", "fp32"), ("ivf", "fp32"), ("ivf", "sq8")):
            ix = make_faiss_index(x, kind, storage)
            _search(ix, q[:1], 5)
            ts = []
            for v in q:
                t0 = time.perf_counter()
                _search(ix, v[None], 5)
                ts.append(time.perf_counter() - t0)
            row[f"{kind}-{storage}"] = {"p50_ms": _pct(ts, 50),
                                        "recall_at_5": round(recall_at_k(ix, x, q, 5), 2)}
        out[name] = row
    return out


def _index_bytes(ix) -> int:
    import faiss

    return len(faiss.serialize_index(ix))


def bench_peak(args) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from profashion.models.base import build_model
    from profashion.retrieval.accel import Embedder

    torch.manual_seed(0)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    matmul = 2 * n**3 / min(ts) / 1e9
    out = {"matmul_fp32_gflop_s": round(matmul, 1), "threads": torch.get_num_threads()}
    for name in args.model:
        model = build_model(name, "paper", num_values=[5] * 8).eval()
        s = model.preprocess.crop
        x = torch.randn(args.batch, 3, s, s)
        with FlopCounterMode(display=False) as fc:  # (its module tracker needs autograd on)
            model.embed_all(x)
        flops = fc.get_total_flops()
        row = {"image_size": s, "batch": args.batch, "gflop_per_image": round(flops / args.batch / 1e9, 2)}
        for backend in ("fp32", "onnx"):
            emb = Embedder(model, backend)
            with torch.no_grad():
                emb.embed_all(x)
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    emb.embed_all(x)
                    ts.append(time.perf_counter() - t0)
            rate = flops / min(ts) / 1e9
            row[backend] = {"backend": emb.backend, "img_s": round(args.batch / min(ts), 2),
                            "gflop_s": round(rate, 1), "fraction_of_matmul_peak": round(rate / matmul, 3)}
        out[name] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    la = sub.add_parser("latency")
    la.add_argument("--index", action="append", required=True)
    la.add_argument("--queries", type=int, default=200)
    la.add_argument("--backend", default="auto")
    ix = sub.add_parser("indexing")
    ix.add_argument("--checkpoint", action="append", required=True)
    ix.add_argument("--dataset", required=True)
    ix.add_argument("--split", default="test")
    ix.add_argument("--images", type=int, default=2000)
    ix.add_argument("--batch", type=int, default=128)
    ix.add_argument("--backend", default="auto")
    ix.add_argument("--repeat", type=int, default=3)
    sc = sub.add_parser("scaling")
    sc.add_argument("--max-n", type=int, default=1_000_000)
    sc.add_argument("--dim", type=int, default=64)
    sc.add_argument("--queries", type=int, default=200)
    an = sub.add_parser("ann")
    an.add_argument("--index", required=True)
    an.add_argument("--queries", type=int, default=500)
    pk = sub.add_parser("peak")
    pk.add_argument("--model", action="append", default=None)
    pk.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    if args.what == "peak" and not args.model:
        args.model = ["asen"]
    fn = {"latency": bench_latency, "indexing": bench_indexing, "scaling": bench_scaling, "ann": bench_ann,
          "peak": bench_peak}
    print(json.dumps({args.what: fn[args.what](args), "torch_threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
