"""The Results tab: the chosen models' measured mAP on the embedded gallery beside a random embedding
(``/results``), and the published numbers of the papers."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from profashion.retrieval.search import QueryError
from profashion.ui.catalog import Catalog
from profashion.ui.common import df, guard

NOTE = (
    "**How to read this.** Measured: retrieval mAP (%) per attribute on the embedded gallery's test split "
    "with the exact protocol of the papers (docs/PROTOCOL.md), beside a random embedding on the same split, and "
    "below it each value's 95% bootstrap interval over the test queries. "
    "Published: the overall numbers of the papers on the real benchmarks (224 px, ImageNet-pretrained "
    "backbones, GPU training). The embedded models are small heads on a frozen ImageNet EfficientNet-Lite0 at "
    "160 px, trained on synthetic garments on a CPU: compare models with each other and with random, not "
    "with the published values."
)
DATASETS = ["FashionAI", "DARN", "DeepFashion", "Zappos50K"]


def intervals_markdown(measured: dict[str, dict], attrs: list[str]) -> str:
    """The 95% bootstrap intervals of each measured result (``MAPResult.to_json``), as a Markdown table."""
    def cell(ci) -> str:
        return f"{ci[0]:.1f}-{ci[1]:.1f}" if ci else "no query"

    lines = ["**95% intervals** (bootstrap over the test queries, resampled within each attribute, 2000 "
             "resamples, seed 0: the range the mAP could take with other queries of the same kind). With a "
             "few queries per attribute they are wide. Overlapping intervals do not settle whether two models "
             "differ: `profashion compare` tests the difference query by query.", "",
             "| model | " + " | ".join(attrs) + " | overall |", "|---" * (len(attrs) + 2) + "|"]
    for name, r in measured.items():
        per = r.get("per_attribute_ci95")
        if per is None or "ci95" not in r:
            lines.append(f"| {name} | " + " | ".join("" for _ in attrs)
                         + " | measured before intervals existed: delete the app cache's results/ to re-measure |")
            continue
        lines.append(f"| {name} | " + " | ".join(cell(per.get(a)) for a in attrs) + f" | {cell(r['ci95'])} |")
    return "\n".join(lines)


def results(catalog: Catalog, models):
    """``/results``: (the measured mAP table, one row per chosen model and one for random; its markdown with the
    test split's queries and the intervals)."""
    from profashion.evaluation.retrieval_map import evaluate_random

    attrs = catalog.attributes
    chosen = catalog.check_models(models)
    rows, measured = [], {}
    for name in chosen:
        r = measured[name] = catalog.measured(name)
        rows.append([name] + [round(r["per_attribute"][a], 2) if a in r["per_attribute"] else None for a in attrs]
                    + [round(r["overall"], 2)])
    rnd = measured["random (seed 0)"] = evaluate_random(catalog.dataset, split="test", seed=0).to_json(
        catalog.dataset.schema)
    rows.append(["random (seed 0)"] + [round(rnd["per_attribute"][a], 2) if a in rnd["per_attribute"] else None
                                       for a in attrs] + [round(rnd["overall"], 2)])
    table = df(rows, ["model", *attrs, "overall"])
    nq = rnd["n_queries"]
    md = (f"Test split of the embedded gallery (`{catalog.dataset.root.name}`), "
          f"{sum(nq.values())} queries ({', '.join(f'{a} {n}' for a, n in nq.items())}).")
    return table, md + "\n\n" + intervals_markdown(measured, attrs)


def published_table(catalog: Catalog):
    """The papers' published overall mAP per benchmark, and which loaded models implement each method."""
    from profashion.evaluation.retrieval_map import PUBLISHED

    loaded_as: dict[str, list[str]] = {}
    for n, e in catalog.models.items():
        if e.published_name:
            loaded_as.setdefault(e.published_name, []).append(n)
    return df([[m] + [PUBLISHED[m].get(d) for d in DATASETS] + [", ".join(loaded_as.get(m, []))]
               for m in PUBLISHED], ["method", *DATASETS[:3], "Zappos50K (triplet acc.)", "loaded here as"])


def sources_markdown() -> str:
    from profashion.evaluation.retrieval_map import PUBLISHED_NOTES, PUBLISHED_SOURCES

    return ("**Sources.** " + "; ".join(f"{k}: {v}" for k, v in PUBLISHED_SOURCES.items())
            + ". Compiled in docs/PROTOCOL.md (overall test mAP, %). " + " ".join(PUBLISHED_NOTES))


def models_markdown(catalog: Catalog) -> str:
    """The models loaded (with what they are) and the folders skipped (with why)."""
    model_lines = [f"- **{e.label}**: {e.describe()}" for e in catalog.models.values()]
    model_lines += [f"- ~~{e.name}~~: {e.error}" for e in catalog.skipped]
    return ("**Models loaded** (from `" + str(catalog.checkpoints_root) + "`)\n\n"
            + ("\n".join(model_lines) or "_none_"))


def build(catalog: Catalog) -> SimpleNamespace:
    """The tab's components (inside ``gr.Tab("Results")``)."""
    published, sources, models_md = published_table(catalog), sources_markdown(), models_markdown(catalog)
    gr.Markdown(NOTE)
    c = SimpleNamespace()
    c.button = gr.Button("Measure mAP of the selected models", variant="primary")
    c.md = gr.Markdown()
    c.measured = gr.Dataframe(label="Measured mAP (%) on the embedded gallery", interactive=False)
    gr.Dataframe(value=published, label="Published overall mAP (%) on the real benchmarks", interactive=False)
    gr.Markdown(sources)
    gr.Markdown(models_md)
    return c


def wire(catalog: Catalog, c: SimpleNamespace, models) -> None:
    c.button.click(guard(results, (QueryError,), catalog), [models], [c.measured, c.md], api_name="results",
                   concurrency_id="heavy", concurrency_limit=1)
