"""Where the Results tab's numbers come from (no Gradio): ``results.json`` shipped beside the checkpoints, read only
as :func:`read_shipped` lets it be shown, and the numbers measured on the gallery's own test split on demand.

:func:`collect` sorts every loaded model into groups measured on one split each (shipped, or the gallery's), the
ones with no numbers yet, and one sentence per shipped number not shown. ``profashion.ui.tab_results`` draws the
table from them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from profashion.explorer.catalog import GALLERY_SPLIT, Catalog, numbers_problem
from profashion.io import JSONLimitError, loads_json, read_bytes_bounded, read_json

RESULTS_FILE = "results.json"
RESULTS_FORMAT = "profashion-results/1"
MANIFEST_FILE = "manifest.json"  # the checkpoints' provenance; its entry RESULTS_FILE records results.json's sha256
MAX_RESULTS_BYTES = 16 * 2**20
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_TEXT = 200  # characters of a text field of results.json shown in the table (folder, dataset, split, layout)
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Shipped:
    """What ``results.json`` beside the checkpoints may show: ``data``, the file with only its well-formed model rows
    (None: nothing shipped is shown); ``problem``, why none of it is shown (one clause; None when it is shown or
    there is no file); ``damaged``, the rows left out: (name in the file, its fingerprint when readable, why)."""

    data: dict | None = None
    problem: str | None = None
    damaged: list[tuple[str, str | None, str]] = field(default_factory=list)


def recorded_digest(root: Path) -> str | None:
    """The sha256 of results.json that the checkpoints' manifest.json records (``scripts/ship_results.py`` writes
    it), or None when there is none or the manifest cannot be read."""
    try:
        manifest = read_json(root / MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES)
    except (OSError, ValueError):
        return None
    entry = manifest.get(RESULTS_FILE) if isinstance(manifest, dict) else None
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    return digest if isinstance(digest, str) and SHA256.fullmatch(digest) else None


def _text(v) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 10**9


def _file_problem(data) -> str | None:
    """What is malformed in results.json as a whole (its format, its dataset, its random row), or None."""
    if not (isinstance(data, dict) and data.get("format") == RESULTS_FORMAT and isinstance(data.get("models"), dict)
            and isinstance(data.get("dataset"), dict) and isinstance(data.get("random"), dict)):
        return f"results.json is not a {RESULTS_FORMAT} file with a dataset, a random row and models"
    d = data["dataset"]
    for key in ("folder", "name", "split", "layout"):
        if key in d and not _text(d[key]):
            return f"dataset.{key} must be text of at most {MAX_TEXT} characters"
    for key in ("images", "queries"):
        if key in d and not _count(d[key]):
            return f"dataset.{key} must be a positive whole number"
    if not _text(d.get("split_fingerprint")):
        return "dataset.split_fingerprint must be text"
    n = d.get("n_queries")
    if not (isinstance(n, dict) and n and all(isinstance(a, str) and _count(c) for a, c in n.items())):
        return "dataset.n_queries must give each attribute a positive whole number of queries"
    problem = numbers_problem(data["random"])
    if problem is not None:
        return f"random.{problem}"
    if data["random"]["n_queries"] != n:
        return "the random row's n_queries differ from the dataset's"
    return None


def _record_problem(r, dataset: dict) -> str | None:
    """What is malformed in one model's row of results.json, or None."""
    problem = numbers_problem(r)
    if problem is not None:
        return problem
    if not (isinstance(r.get("fingerprint"), str) and SHA256.fullmatch(r["fingerprint"])):
        return "its fingerprint must be a sha256 (64 hex digits)"
    if r.get("split_fingerprint") != dataset["split_fingerprint"] or r["n_queries"] != dataset["n_queries"]:
        return "it was not measured on the split the file describes"
    return None


def read_shipped(catalog: Catalog) -> Shipped:
    """``results.json`` beside the catalog's checkpoints, checked before anything of it is shown: its sha256 against
    the one manifest.json records (changed numbers are not shown as shipped), its size, its JSON, then every field
    the table shows (types, finiteness, mAPs from 0 to 100, intervals as pairs, query counts positive). A damaged
    file costs its numbers, a damaged model row that model's numbers: they are measured on demand instead."""
    root = Path(catalog.checkpoints_root)
    path = root / RESULTS_FILE
    if not path.is_file():
        return Shipped()
    try:
        raw = read_bytes_bounded(path, MAX_RESULTS_BYTES, RESULTS_FILE)
    except JSONLimitError as exc:
        return Shipped(problem=f"{RESULTS_FILE} {exc.problem}")
    except OSError:
        return Shipped(problem="results.json cannot be read")
    recorded = recorded_digest(root)
    if recorded is None:
        return Shipped(problem="manifest.json records no sha256 of results.json")
    if hashlib.sha256(raw).hexdigest() != recorded:
        return Shipped(problem="results.json is not the file whose sha256 manifest.json records (it changed after "
                               "it was shipped)")
    try:
        data = loads_json(raw, max_bytes=MAX_RESULTS_BYTES)
    except JSONLimitError:
        return Shipped(problem="results.json is not valid JSON")
    problem = _file_problem(data)
    if problem is not None:
        return Shipped(problem=problem)
    models, damaged = {}, []
    for name, r in data["models"].items():
        why = _record_problem(r, data["dataset"])
        if why is None:
            models[name] = r
        else:
            fp = r.get("fingerprint") if isinstance(r, dict) else None
            damaged.append((name, fp if isinstance(fp, str) and SHA256.fullmatch(fp) else None, why))
    return Shipped({**data, "models": models}, None, damaged)


def shipped_results(catalog: Catalog) -> dict | None:
    """``results.json`` beside the catalog's checkpoints (``scripts/ship_results.py``) as :func:`read_shipped` lets it
    be shown, or None when there is none or none of it can be shown (then every model is measured on the gallery,
    as if nothing had been shipped)."""
    return read_shipped(catalog).data


def shipped_notes(shipped: Shipped, catalog: Catalog, own: dict[str, dict | None]) -> list[str]:
    """One sentence per shipped number not shown: the whole file's, or each loaded model's whose row is damaged
    (matched by its weights' fingerprint, else by its name)."""
    where = f"measured on the gallery's own {GALLERY_SPLIT} split on demand"
    if shipped.problem is not None:
        return [f"The numbers shipped with the checkpoints are not shown ({shipped.problem}): every model is {where}."]
    notes = []
    for name, entry in catalog.models.items():
        if own.get(name) is not None:
            continue
        why = next((w for n, fp, w in shipped.damaged if (fp is not None and fp == entry.fingerprint)
                    or (fp is None and n == name)), None)
        if why is not None:
            notes.append(f"The shipped numbers of {entry.label} are not shown ({why}): it is {where}.")
    return notes


def shipped_for(shipped: dict | None, name: str, fingerprint: str) -> dict | None:
    """The shipped numbers of the checkpoint with this weights fingerprint (its own name first, then any other
    folder name with the same weights), or None: a checkpoint changed since the numbers were measured, or never
    measured, gets none."""
    if not shipped or not fingerprint:
        return None
    models = shipped["models"]
    candidates = [models.get(name)] + [r for n, r in models.items() if n != name]
    return next((r for r in candidates if isinstance(r, dict) and r.get("fingerprint") == fingerprint), None)


@dataclass
class Group:
    """Rows measured on one split: a sentence saying which, its queries per attribute, the rows, random."""

    key: str
    title: str
    n_queries: dict[str, int]
    rows: list[tuple[str, dict]] = field(default_factory=list)
    random: dict | None = None


def _gallery_group(catalog: Catalog) -> Group:
    from profashion.evaluation.retrieval_map import evaluate_random

    rnd = evaluate_random(catalog.dataset, split=GALLERY_SPLIT, seed=0).to_json(catalog.dataset.schema,
                                                                               per_query=False)
    n = rnd["n_queries"]
    title = (f"Measured here, on the gallery's own {GALLERY_SPLIT} split ({catalog.num_items} images, "
             f"{sum(n.values())} queries): few queries per attribute, wide intervals")
    return Group("gallery", title, n, random=rnd)


def _shipped_group(shipped: dict) -> Group:
    d = shipped["dataset"]
    n = {k: int(v) for k, v in (d.get("n_queries") or {}).items()}
    title = (f"Shipped with the checkpoints: measured on {d.get('folder', d.get('name', '?'))}, {d.get('split')} split "
             f"({d.get('images')} images, {d.get('queries', sum(n.values()))} queries, {d.get('layout', 'asen')} "
             "layout)")
    return Group("shipped", title, n, random=shipped.get("random"))


def collect(catalog: Catalog, measure=(), progress=None) -> tuple[list[Group], list[str], list[str]]:
    """(the groups of measured rows, the loaded models with no numbers yet, why shipped numbers are not shown);
    every loaded model is in one of the first two. The models of ``measure`` that have no numbers yet are measured
    on the gallery's test split first, one after the other, each announced to ``progress(fraction, desc)``."""
    checked = read_shipped(catalog)
    shipped = checked.data
    models = catalog.models
    own = {n: shipped_for(shipped, n, e.fingerprint) for n, e in models.items()}
    todo = [n for n in measure if n in models and own[n] is None and catalog.measured(n, compute=False) is None]
    for i, name in enumerate(todo):
        if progress is not None:
            progress(i / len(todo), desc=f"measuring {name} on the gallery's {GALLERY_SPLIT} split "
                                         f"({i + 1} of {len(todo)})")
        catalog.measured(name)
    groups: dict[str, Group] = {}
    pending = []
    for name in models:
        if own[name] is not None:
            g = groups.get("shipped") or groups.setdefault("shipped", _shipped_group(shipped))
            g.rows.append((name, own[name]))
            continue
        r = catalog.measured(name, compute=False)
        if r is None:
            pending.append(name)
            continue
        g = groups.get("gallery") or groups.setdefault("gallery", _gallery_group(catalog))
        g.rows.append((name, r))
    order = [groups[k] for k in ("shipped", "gallery") if k in groups]
    return order, pending, shipped_notes(checked, catalog, own)
