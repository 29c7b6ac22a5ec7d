"""The ``profashion`` command: generate | import-csv | train | eval | compare | localise | faithfulness | index | search |
project | models | galleries | export.

Every command fails with one line ``error: ...`` (exit status 2) on bad input, never a traceback.

Each command imports what it needs inside its function: that is the one place in the package where the
project's own modules are imported lazily on purpose, so ``profashion --help``, ``profashion models`` and a
mistyped flag answer without loading torch, faiss or Gradio (about 2 s on this machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _cmd_generate(args) -> int:
    from profashion.data.synth import generate_synth

    t0 = time.perf_counter()
    out = generate_synth(Path(args.out), args.train, args.valid, args.test, size=args.size, seed=args.seed,
                         overwrite=args.overwrite, progress=not args.quiet, eval_layout=args.eval_layout)
    n = args.train + args.valid + args.test
    print(f"wrote {n} synthetic garments ({args.size} px, seed {args.seed}, {args.eval_layout} eval layout) to "
          f"{out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _print_eval_queries(out) -> None:
    """One line per eval split: images, queries, queries per attribute (what a test can measure)."""
    from profashion.data.splits import EVAL_SPLITS, load_dataset

    ds = load_dataset(out)
    for split in EVAL_SPLITS:
        if split not in ds.splits or ds.splits[split].queries is None:
            continue
        s = ds.splits[split]
        per = [int((s.queries[:, 1] == a).sum()) for a in range(ds.schema.num_attributes)]
        print(f"{split}: {s.num_images} images, {len(s.queries)} queries, {len(s.candidates)} candidates "
              f"({ds.eval_layout} layout); queries per attribute: "
              + ", ".join(f"{n} {k}" for n, k in zip(ds.schema.names, per)))


def _cmd_import_csv(args) -> int:
    from profashion.data.csv_import import import_csv

    t0 = time.perf_counter()
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    out = import_csv(Path(args.csv), Path(args.image_root), attributes, Path(args.out), seed=args.seed,
                     image_column=args.image_column, overwrite=args.overwrite, valid_fraction=args.valid_fraction,
                     test_fraction=args.test_fraction, query_fraction=args.query_fraction,
                     eval_layout=args.eval_layout)
    print(f"wrote {out} ({len(attributes)} attributes) in {time.perf_counter() - t0:.1f}s")
    _print_eval_queries(out)
    return 0


# ``profashion train`` flags and the TrainConfig setting each one sets (flags override a --config file)
TRAIN_FLAGS = ("model", "dataset", "out", "preset", "image_root", "epochs", "lr", "lr_step", "lr_gamma",
               "stage2_epochs", "stage2_lr", "stage2_gamma", "batch_size", "triplets_per_epoch", "warmup_steps",
               "warmup_target", "attributes", "seed", "device", "model_config", "frozen_trunk")


def train_config(args):
    """The run's TrainConfig: the ``--config`` file's settings (if any), each flag given overriding its setting
    (``--model-config`` entries override the file's ``model_overrides`` one by one)."""
    from profashion.io import loads_json
    from profashion.train.config import MAX_CONFIG_BYTES, TrainConfig, read_config

    settings = read_config(args.config) if args.config else {}
    for flag in TRAIN_FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "model_config":
            overrides = loads_json(value, max_bytes=MAX_CONFIG_BYTES, what="--model-config",
                                   fix='give a JSON object of model settings, e.g. \'{"embed_dim": 32}\'')
            if not isinstance(overrides, dict):
                raise ValueError('--model-config must be a JSON object, e.g. \'{"embed_dim": 32}\'')
            settings["model_overrides"] = {**(settings.get("model_overrides") or {}), **overrides}
        elif flag == "attributes":
            settings["attributes"] = [a.strip() for a in value.split(",") if a.strip()] or None
        else:
            settings[flag] = value
    if not settings.get("out"):
        raise ValueError("no run folder: give --out (or \"out\" in the --config file)")
    return TrainConfig.from_json(settings, f"the configuration of {args.config}" if args.config else
                                 "the command line")


def _cmd_train(args) -> int:
    import os

    from profashion.train.trainer import train

    run = train(train_config(args), resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run finished: best checkpoint in {run / 'best'}, metrics in {run / 'metrics.jsonl'}")
    return 0


def _cmd_eval(args) -> int:
    from profashion.data.splits import load_dataset
    from profashion.evaluation.retrieval_map import evaluate_random, published_random, write_result_json
    from profashion.evaluation.statistics import check_resamples

    check_resamples(args.resamples, "--resamples")  # before any work
    ds = load_dataset(args.dataset, args.image_root)
    t0 = time.perf_counter()
    if args.embeddings == "random":
        result = evaluate_random(ds, args.split, seed=args.seed)
        label = f"random embeddings (seed {args.seed})"
        info = {"model": f"random (seed {args.seed})"}
    else:
        from profashion.device import resolve_device
        from profashion.evaluation.evaluate import evaluate_model

        model = load_model_for_dataset(args.checkpoint, ds, resolve_device(args.device))
        result = evaluate_model(model, ds, args.split, batch_size=args.batch_size, progress=not args.quiet)
        label = f"{model.name} from {args.checkpoint}"
        info = {"model": model.name, "checkpoint": str(args.checkpoint)}
    result.n_resamples, result.bootstrap_seed = args.resamples, args.bootstrap_seed
    published = published_random(ds.name) if args.embeddings == "random" else None
    print(f"{ds.name} {args.split} ({ds.eval_layout} layout): {label}  [{time.perf_counter() - t0:.1f}s]")
    print(result.format_table(ds.schema, published=published))
    if args.json:
        write_result_json(result, ds.schema, args.json,
                          extra={**info, "dataset": ds.name, "split": args.split, "layout": ds.eval_layout})
    return 0


def _cmd_compare(args) -> int:
    from profashion.evaluation.statistics import check_permutations, check_resamples, compare_result_files
    from profashion.io import atomic_write_json

    check_resamples(args.resamples, "--resamples")
    check_permutations(args.permutations, "--permutations")
    cmp = compare_result_files(args.result_a, args.result_b, n_resamples=args.resamples,
                               n_permutations=args.permutations, seed=args.seed)
    where = " ".join(str(cmp.info[k]) for k in ("dataset", "split") if k in cmp.info)
    layout = f" ({cmp.info['layout']} layout)" if "layout" in cmp.info else ""
    print(f"paired comparison on {where or 'the same queries'}{layout}: B - A in mAP points")
    print(cmp.format_table())
    if args.json:
        atomic_write_json(args.json, cmp.to_json())
    return 0


def load_model_for_dataset(checkpoint, ds, device="cpu"):
    """Load a checkpoint and check that it was trained on the attributes of ``ds``."""
    from profashion.models.base import ModelError, load_model

    model = load_model(checkpoint, device=device)
    info = getattr(model, "checkpoint_info", {}).get("dataset")
    if model.config.num_values != ds.schema.num_values:
        raise ModelError(
            f"{checkpoint} was trained for {len(model.config.num_values)} attributes with value counts "
            f"{model.config.num_values}, but {ds.root} has {ds.schema.num_values}"
        )
    if info and list(info.get("attributes", [])) != list(ds.schema.names):
        raise ModelError(f"{checkpoint} was trained on attributes {info['attributes']}, "
                         f"but {ds.root} has {list(ds.schema.names)}")
    return model


def _cmd_models(args) -> int:
    from profashion.models.base import available_models, model_presets, preset_record

    for name in available_models():
        print(name)
        for p in model_presets(name):
            rec = preset_record(name, p)
            tr = rec["train"]
            print(f"  {p:8s} {rec['about']}; {tr['epochs']} epochs x {tr['triplets_per_epoch']} triplets, "
                  f"lr {tr['lr']:g}" + (f", {tr['warmup_steps']} warm-up steps" if tr["warmup_steps"] else ""))
    return 0


def _galleries(args, only: str | None = None, first: bool = False):
    """The app's galleries (:mod:`profashion.explorer`, the objects the app stands on) of the checkout ``--repo``:
    every ``galleries/*/gallery.json`` there, served by the checkpoints root (``PROFASHION_CHECKPOINTS``, else
    ``<repo>/checkpoints``); ``only``: that one gallery; ``first``: the first one only (the app's default)."""
    from profashion.data.splits import DatasetError
    from profashion.explorer import Galleries, default_galleries
    from profashion.paths import checkpoints_root

    repo = Path(args.repo)
    defs = default_galleries(repo, checkpoints_root(repo / "checkpoints"))
    if not defs:
        raise DatasetError(f"{repo} has no gallery (no galleries/*/gallery.json): give the checkout with --repo")
    if only is not None:
        names = [d.name for d in defs]
        if only not in names:
            raise DatasetError(f"unknown gallery {only[:60]!r}; the galleries are {', '.join(names)}")
        defs = [d for d in defs if d.name == only]
    return Galleries.load(defs[:1] if first else defs)


def _cmd_galleries(args) -> int:
    for g in _galleries(args).describe():
        if not g["available"]:
            print(f"{g['name']}: not available ({g['reason']})")
            continue
        print(f"{g['name']}: {g['title']}, {g['items']:,} images; attributes {', '.join(g['attributes'])}")
        for m in g["models"]:
            print(f"  {m['name']:24s} {m['label']}")
        for m in g["skipped_models"]:
            print(f"  {m['name']:24s} not served: {m['reason']}")
    return 0


def _cmd_export(args) -> int:
    from profashion.data.splits import DatasetError
    from profashion.explorer import export_case

    if (args.image is None) == (args.item is None):
        raise DatasetError("give the query as --image FILE or as --item N (a gallery item), one of the two")
    galleries = _galleries(args, args.gallery, first=True)
    catalog = galleries.default
    if args.item is not None:
        if not 0 <= args.item < catalog.num_items:
            raise DatasetError(f"--item must be from 0 to {catalog.num_items - 1} for the {catalog.name} gallery")
        query = catalog.item_path(args.item)
    else:
        query = Path(args.image)
        if not query.is_file():
            raise FileNotFoundError(f"no image file {args.image}")
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else list(catalog.models)
    png, js = export_case(catalog, str(query), args.attribute, models, args.out)
    print(f"wrote {png}\nwrote {js}")
    return 0


def _cmd_localise(args) -> int:
    from profashion.data.splits import load_dataset
    from profashion.device import resolve_device
    from profashion.evaluation.localisation import evaluate_localisation, write_localisation_json
    from profashion.models.base import load_model

    ds = load_dataset(args.dataset, args.image_root)
    model = load_model(args.checkpoint, device=resolve_device(args.device))
    res = evaluate_localisation(model, ds, args.split, key=args.map, max_pairs=args.max_pairs, seed=args.seed,
                                progress=not args.quiet)
    print(f"localisation of {model.name}'s {args.map!r} map on the {args.split} split of {ds.name} "
          f"(% of the map's mass inside the attribute's ground-truth region)")
    print(res.format_table())
    if args.json:
        write_localisation_json(res, args.json, {"model": model.name, "checkpoint": str(args.checkpoint),
                                                 "dataset": ds.name, "split": args.split})
    return 0


def _cmd_faithfulness(args) -> int:
    from profashion.data.splits import load_dataset
    from profashion.device import resolve_device
    from profashion.evaluation.faithfulness import (
        check_settings,
        evaluate_faithfulness,
        write_faithfulness_json,
    )
    from profashion.evaluation.statistics import check_resamples

    check_settings(args.steps, args.grid, args.k)  # before any loading
    check_resamples(args.resamples, "--resamples")
    if args.max_pairs is not None and args.max_pairs < 1:
        raise ValueError(f"--max-pairs must be at least 1, got {args.max_pairs}")
    if not Path(args.checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {args.checkpoint}")
    ds = load_dataset(args.dataset, args.image_root)
    model = load_model_for_dataset(args.checkpoint, ds, resolve_device(args.device))
    res = evaluate_faithfulness(model, ds, args.split, maps=args.map, max_pairs=args.max_pairs, steps=args.steps,
                                grid=args.grid, k=args.k, seed=args.seed, n_resamples=args.resamples,
                                progress=not args.quiet)
    st = res.settings
    print(f"faithfulness of {model.name}'s maps on the {args.split} split of {ds.name}: {st['pairs']} pairs, "
          f"{st['steps']} steps, ROAD removal, similarity to the query's top-{st['k']} matches, "
          f"{st['forward_passes_per_pair']} forward passes a pair  [{res.seconds:.1f}s]")
    print(res.format_table())
    if args.json:
        write_faithfulness_json(res, args.json, {"checkpoint": str(args.checkpoint), "dataset": ds.name,
                                                 "split": args.split})
    return 0


def _cmd_index(args) -> int:
    from profashion.device import resolve_device
    from profashion.retrieval.index import GalleryIndex, build_index

    t0 = time.perf_counter()
    out = build_index(args.checkpoint, args.dataset, args.out, split=args.split, image_root=args.image_root,
                      kind=args.index, storage=args.storage, batch_size=args.batch_size,
                      device=resolve_device(args.device), overwrite=args.overwrite, progress=not args.quiet,
                      backend=args.backend)
    ix = GalleryIndex.load(out)
    recall = ix.manifest["index"].get("recall_at_5")
    b = ix.manifest["backend"]
    print(f"indexed {len(ix)} images x {ix.schema.num_attributes} attributes ({ix.model_name}, {args.index}/"
          f"{args.storage}, {ix.dim}-D, inference {b['used']}) into {out} in {time.perf_counter() - t0:.1f}s"
          + (f" ({b['note']})" if b["note"] else ""))
    if recall:
        print("recall@5 against exact search: " + ", ".join(f"{k} {v:.1f}%" for k, v in recall.items()))
    return 0


def _cmd_search(args) -> int:
    from profashion.device import resolve_device
    from profashion.io import atomic_write_json
    from profashion.retrieval.search import RetrievalEngine

    engine = RetrievalEngine(device=resolve_device(args.device))
    names = []
    for i, index in enumerate(args.index):
        name = Path(index).name or f"index{i}"
        while name in names:
            name += "'"
        engine.add(name, index, checkpoint=args.checkpoint if len(args.index) == 1 else None, backend=args.backend)
        names.append(name)
    results = engine.search_all(args.image, args.attribute, k=args.k)
    for name, r in results.items():
        head = f"{name} ({r.method}) - {r.attribute}"
        if r.query_value:
            head += f" (query: {r.query_value})"
        print(head)
        if r.error:
            print(f"  error: {r.error}")
        for h in r.hits:
            mark = {True: " hit", False: " miss", None: ""}[h.match]
            print(f"  {h.rank}. {h.score:.4f}  {h.value or '?':24s} {h.path}{mark}")
    if args.json:
        payload = {"query": str(args.image), "attribute": args.attribute, "k": args.k,
                   "results": [r.to_json() for r in results.values()]}
        atomic_write_json(args.json, payload)
    return 0 if all(r.error is None for r in results.values()) else 2


def _cmd_project(args) -> int:
    from profashion.io import atomic_write_json
    from profashion.retrieval.index import GalleryIndex
    from profashion.retrieval.projection import attribute_projection

    ix = GalleryIndex.load(args.index)
    names = [ix.schema.names[ix.schema.attribute_index(a.strip())] for a in args.attribute.split(",")] \
        if args.attribute else list(ix.schema.names)
    print(f"{ix.model_name} on {ix.manifest['dataset']['name']} ({len(ix)} images), {args.method} seed {args.seed}")
    print(f"{'attribute':24s} {'points':>6s} {'kNN acc %':>9s} {'chance %':>8s} {'silhouette':>10s}  cached")
    payload = {}
    for name in names:
        t0 = time.perf_counter()
        p = attribute_projection(ix, name, args.method, seed=args.seed, max_points=args.max_points)
        sil = "-" if p.silhouette is None else f"{p.silhouette:.3f}"
        knn = "-" if p.knn_accuracy is None else f"{p.knn_accuracy:.1f}"
        chance = "-" if p.chance is None else f"{p.chance:.1f}"
        print(f"{name:24s} {len(p.items):6d} {knn:>9s} {chance:>8s} {sil:>10s}  "
              f"{'yes' if p.cached else f'no ({time.perf_counter() - t0:.1f}s)'}")
        payload[name] = {"items": p.items.tolist(), "xy": p.xy.round(4).tolist(),
                         "values": [p.value_names[v] for v in p.values], "knn_accuracy": p.knn_accuracy,
                         "chance": p.chance, "silhouette": p.silhouette}
    if args.json:
        atomic_write_json(args.json, {"index": str(args.index), "method": args.method, "attributes": payload},
                          indent=None)
    return 0


EVAL_LAYOUT_HELP = ("how valid/test images become queries and candidates: asen (default; one attribute per image, "
                    "the official benchmarks' layout) or all-attributes (every attribute an image is labelled "
                    "with: several times more queries on small data; numbers not comparable across layouts)")


def _add_train_parser(sub) -> None:
    """``profashion train``: every flag sets one TrainConfig setting, over a --config file's."""
    t = sub.add_parser("train", help="train a model with the conditioned triplet loss",
                       description="Every setting may come from --config FILE (a JSON object of training settings, "
                                   "e.g. a run's args.json); a flag given overrides the file's setting.")
    t.add_argument("--config", help="JSON file of training settings (profashion.train.config.TrainConfig); "
                                    "flags override it")
    t.add_argument("--model", help="triplet, csn, asen, ... (see `profashion models`)")
    t.add_argument("--dataset")
    t.add_argument("--image-root")
    t.add_argument("--preset", help="the model's preset record: settings and schedule (demo, scratch, paper, ...: "
                                    "see `profashion models`; default demo)")
    t.add_argument("--out", help="run folder (best/, last/, metrics.jsonl)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-step", type=int, help="decay the learning rate every N epochs")
    t.add_argument("--lr-gamma", type=float, help="decay factor")
    t.add_argument("--stage2-epochs", type=int,
                   help="a second stage after --epochs: this many epochs at --stage2-lr, decayed by --stage2-gamma "
                        "every epoch (ProFashion's schedule; 0 = none)")
    t.add_argument("--stage2-lr", type=float)
    t.add_argument("--stage2-gamma", type=float)
    t.add_argument("--batch-size", type=int, help="global batch of triplets")
    t.add_argument("--triplets-per-epoch", type=int)
    t.add_argument("--warmup-steps", type=int,
                   help="steps of warm-up by attribute classification before the triplet epochs "
                        "(scratch presets 1000-2000; demo and paper 0: they use pretrained weights instead)")
    t.add_argument("--warmup-target", choices=["backbone", "embedding"],
                   help="what the warm-up classifies from: the backbone's features, or each attribute's "
                        "embedding (trains the whole model, conditioning included; the ViT models' demo preset)")
    t.add_argument("--attributes", help="train on these attributes only, comma-separated (default: all)")
    t.add_argument("--seed", type=int, help="default 0")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--model-config", help='JSON overrides of the model preset, e.g. \'{"embed_dim": 32}\'')
    t.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")
    t.add_argument("--frozen-trunk", action="store_true", default=None,
                   help="freeze a ViT model's whole trunk (cca1, cca2, tf-csn, tf-asen), cache its tokens and train "
                        "only the conditional head; the practical way to fine-tune a big pretrained ViT on a CPU. "
                        "Presets with frozen_stages (the demo presets) always train from a cache of those stages")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profashion", description="Attribute-specific fashion retrieval, made visible.")
    sub = p.add_subparsers(dest="command", required=True)

    _add_data_parsers(sub)
    _add_train_parser(sub)
    _add_evaluation_parsers(sub)
    _add_retrieval_parsers(sub)
    _add_explorer_parsers(sub)
    return p


def _add_data_parsers(sub) -> None:
    """``profashion generate`` and ``profashion import-csv``: datasets in the split format."""
    g = sub.add_parser("generate", help="generate a dataset")
    gsub = g.add_subparsers(dest="kind", required=True)
    s = gsub.add_parser("synth", help="synthetic garments with attribute masks (the embedded default)")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=4000)
    s.add_argument("--valid", type=int, default=500)
    s.add_argument("--test", type=int, default=1000)
    s.add_argument("--size", type=int, default=112, help="image size in pixels (default 112)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--eval-layout", default="asen", choices=["asen", "all-attributes"], help=EVAL_LAYOUT_HELP)
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_generate)

    c = sub.add_parser("import-csv", help="turn a CSV catalogue into the split format")
    c.add_argument("csv")
    c.add_argument("--image-root", required=True, help="folder the CSV's image paths are relative to")
    c.add_argument("--attributes", required=True, help="comma-separated attribute columns, e.g. baseColour,usage")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--image-column", default="image")
    c.add_argument("--eval-layout", default="asen", choices=["asen", "all-attributes"], help=EVAL_LAYOUT_HELP)
    c.add_argument("--valid-fraction", type=float, default=0.1, help="share of the images in valid (default 0.1)")
    c.add_argument("--test-fraction", type=float, default=0.2, help="share of the images in test (default 0.2)")
    c.add_argument("--query-fraction", type=float, default=0.2,
                   help="share of each (attribute, value)'s eval images that are queries (default 0.2)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=_cmd_import_csv)


def _add_evaluation_parsers(sub) -> None:
    """``eval``, ``compare``, ``localise`` and ``faithfulness``: the numbers of a model."""
    e = sub.add_parser("eval", help="retrieval mAP with the ASEN protocol")
    e.add_argument("--dataset", required=True)
    e.add_argument("--image-root", default=None)
    e.add_argument("--split", default="test", choices=["valid", "test"])
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint")
    src.add_argument("--embeddings", choices=["random"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--resamples", type=int, default=2000,
                   help="bootstrap resamples of the queries for the 95%% intervals (default 2000)")
    e.add_argument("--bootstrap-seed", type=int, default=0)
    e.add_argument("--json", help="write the result as JSON here, with the per-query APs `profashion compare` needs")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_eval)

    cm = sub.add_parser("compare", help="paired test of two `eval --json` results on the same queries")
    cm.add_argument("result_a", metavar="RESULT_A.json")
    cm.add_argument("result_b", metavar="RESULT_B.json")
    cm.add_argument("--resamples", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    cm.add_argument("--permutations", type=int, default=10000,
                    help="sign-flip permutations for the p-value (default 10000)")
    cm.add_argument("--seed", type=int, default=0)
    cm.add_argument("--json", help="write the comparison as JSON here")
    cm.set_defaults(func=_cmd_compare)

    lo = sub.add_parser("localise", help="how much of a model's map falls on the attribute (synthetic data)")
    lo.add_argument("--checkpoint", required=True)
    lo.add_argument("--dataset", required=True, help="a synthetic dataset (it has attribute masks)")
    lo.add_argument("--image-root", default=None)
    lo.add_argument("--split", default="test", choices=["train", "valid", "test"])
    lo.add_argument("--map", default="heatmap", help="which map of the model's explain (default: heatmap)")
    lo.add_argument("--max-pairs", type=int, default=None, help="score a seeded sample of (image, attribute) pairs")
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--device", default="auto")
    lo.add_argument("--json", help="write the result as JSON here")
    lo.add_argument("--quiet", action="store_true")
    lo.set_defaults(func=_cmd_localise)

    fa = sub.add_parser("faithfulness", help="deletion / insertion AUCs of a model's maps against random and "
                                             "inverse orders (no ground truth needed)")
    fa.add_argument("--checkpoint", required=True)
    fa.add_argument("--dataset", required=True)
    fa.add_argument("--image-root", default=None)
    fa.add_argument("--split", default="test", choices=["train", "valid", "test"])
    fa.add_argument("--map", action="append", default=None,
                    help="score this map of the model's explain (repeat for several; default: every heatmap, "
                         "superpixel map and box)")
    fa.add_argument("--max-pairs", type=int, default=None, help="score a seeded sample of (image, attribute) pairs")
    fa.add_argument("--steps", type=int, default=10, help="removal steps from 0 to 100%% of the image (4-20, "
                                                         "default 10)")
    fa.add_argument("--grid", type=int, default=16, help="a heatmap is removed in grid x grid cells (4-64, default 16)")
    fa.add_argument("-k", type=int, default=5, help="track the similarity to the query's top k matches (default 5)")
    fa.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the pairs (default 2000)")
    fa.add_argument("--seed", type=int, default=0)
    fa.add_argument("--device", default="auto")
    fa.add_argument("--json", help="write the result (summaries and every pair's curves) as JSON here")
    fa.add_argument("--quiet", action="store_true")
    fa.set_defaults(func=_cmd_faithfulness)


def _add_retrieval_parsers(sub) -> None:
    """``index``, ``search``, ``project`` and ``models``: galleries, queries, spaces."""
    ix = sub.add_parser("index", help="embed a gallery under every attribute and build its faiss indexes")
    ix.add_argument("--checkpoint", required=True)
    ix.add_argument("--dataset", required=True)
    ix.add_argument("--image-root", default=None)
    ix.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    ix.add_argument("--out", required=True, help="index folder")
    ix.add_argument("--index", default="flat", choices=["flat", "hnsw", "ivf"],
                    help="flat = exact (default); hnsw / ivf = approximate, for large galleries")
    ix.add_argument("--storage", default="fp32", choices=["fp32", "fp16", "sq8"])
    ix.add_argument("--batch-size", type=int, default=128)
    ix.add_argument("--backend", default="auto", choices=["auto", "fp32", "bf16", "onnx"],
                    help="inference backend (auto: ONNX Runtime on CPU when the model exports, else PyTorch fp32)")
    ix.add_argument("--device", default="auto")
    ix.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    ix.add_argument("--quiet", action="store_true")
    ix.set_defaults(func=_cmd_index)

    se = sub.add_parser("search", help="top-k of a query image under an attribute")
    se.add_argument("--index", required=True, action="append",
                    help="index folder (repeat to compare several models on the same query)")
    se.add_argument("--image", required=True)
    se.add_argument("--attribute", required=True)
    se.add_argument("-k", type=int, default=5)
    se.add_argument("--checkpoint", default=None, help="the index's checkpoint, if it moved (one --index only)")
    se.add_argument("--device", default="cpu")
    se.add_argument("--backend", default="auto", choices=["auto", "fp32", "bf16", "onnx"])
    se.add_argument("--json", help="write the results as JSON here")
    se.set_defaults(func=_cmd_search)

    pr = sub.add_parser("project", help="2-D t-SNE/UMAP of each attribute space of an index, and how "
                                         "well each separates its values")
    pr.add_argument("--index", required=True)
    pr.add_argument("--attribute", default=None, help="comma-separated attributes (default: all)")
    pr.add_argument("--method", default="tsne", choices=["tsne", "umap"])
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--max-points", type=int, default=1000)
    pr.add_argument("--json", help="write the coordinates and scores as JSON here")
    pr.set_defaults(func=_cmd_project)

    m = sub.add_parser("models", help="list the models and their presets")
    m.set_defaults(func=_cmd_models)



def _add_explorer_parsers(sub) -> None:
    """``profashion galleries`` and ``profashion export``: the app's own services (:mod:`profashion.explorer`)."""
    repo_help = "the checkout whose galleries/ and checkpoints/ the app serves (default: the working folder)"
    ga = sub.add_parser("galleries", help="the app's galleries with the models that serve them")
    ga.add_argument("--repo", default=".", help=repo_help)
    ga.set_defaults(func=_cmd_galleries)

    ex = sub.add_parser("export", help="a case as the app's Export writes it: one PNG and one JSON comparing the "
                                       "models' top-5 and maps for a query and attribute")
    ex.add_argument("--gallery", default=None, help="the gallery's name (default: the first; see `galleries`)")
    ex.add_argument("--image", default=None, help="the query image file")
    ex.add_argument("--item", type=int, default=None, help="or a gallery item as the query")
    ex.add_argument("--attribute", required=True)
    ex.add_argument("--models", default=None, help="comma-separated model names (default: every model served)")
    ex.add_argument("--out", required=True, help="the folder to write into (a new subfolder per case)")
    ex.add_argument("--repo", default=".", help=repo_help)
    ex.set_defaults(func=_cmd_export)


def main(argv: list[str] | None = None) -> int:
    from profashion.data.images import ImageError
    from profashion.data.splits import DatasetError
    from profashion.models.base import ModelError
    from profashion.retrieval.index import GalleryIndexError
    from profashion.retrieval.search import QueryError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ModelError, ImageError, GalleryIndexError, QueryError, ValueError, FileNotFoundError,
            FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
