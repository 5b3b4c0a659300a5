"""Does a catalog-independent item encoder (pooled feature tokens) match the ID table?

Claim (SRT, Zivic et al. 2024, arXiv 2412.07585): items can be encoded from their features
(a pooled bag of feature-token embeddings) instead of one learned row per item, so the
parameter count no longer grows with the catalog, at little cost in quality.

Protocol: MovieLens-100K with its item features (RecBole's ``ml-100k.item``: title words,
release year, genres; 1,682 items), ``configs/ml100k_sasrec_fast.yaml`` (d_model 64, 2
layers, batch 32, 10 epochs, leave-one-out, full ranking), seeds 0, 1, 2, the encoder the
only difference:

- ``id``: one learned row per item (the baseline);
- ``features``: the mean of the item's feature-token rows (``model.item_encoder: features``);
- ``features+id``: that plus the ID row;
- ``features_min2``: ``features`` on a store whose vocabulary keeps only the tokens at least
  2 films carry (``data prepare --min-token-items 2``: 687 tokens instead of 2,484, fewer
  rows than the 1,682 films; a title word of one film is an item id in disguise).

Reported per arm: parameters (all, embedding), test NDCG@10 / HR@10 at the best-validation
checkpoint and held-out loss (mean ± std over seeds), the paired difference to ``id`` with a
95% t interval, and the ratio of NDCG@10 to ``id``'s (the issue's bar: within 10%).

    python experiments/item_encoder.py [--quick] [--out DIR] [--seeds 0 1 2]

Writes ``results.json``, ``item_encoder.png`` / ``.svg`` and ``table.md`` into ``--out``
(default ``experiments_out/item_encoder``). ``--quick`` runs on a tiny synthetic log with
generated features (what the test runs); its numbers mean nothing. Conclusions:
docs/experiments/item_encoder.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import REPO, mean_std, paired_difference, plt, run_experiment, save_figure, seeds_of

from srt_jax.config import load_config
from srt_jax.data.download import DATASETS, get_dataset, get_item_features
from srt_jax.data.ingest import FeatureInput, prepare_store
from srt_jax.data.readers import FeatureColumn
from srt_jax.data.synthetic import synthesize_store
from srt_jax.train.loop import train

CONFIG = "configs/ml100k_sasrec_fast.yaml"
ARMS = {  # name: (model.item_encoder, least items per token of the store)
    "id": ("id", 1),
    "features": ("features", 1),
    "features+id": ("features+id", 1),
    "features_min2": ("features", 2),
}
METRICS = ("ndcg@10", "hr@10", "loss")


def pruned_movielens(out: Path) -> Path:
    """MovieLens-100K with the feature tokens at least 2 films carry."""
    name = "movielens-100k"
    table = get_item_features(name)
    columns = tuple(FeatureColumn.parse(c) for c in DATASETS[name].item_features.columns)
    fetched = get_dataset(name)
    return prepare_store(
        [fetched.path],
        fetched.format,
        out / "ml100k_min2",
        item_features=FeatureInput(table.path, table.format, columns, min_token_items=2),
        overwrite=True,
        progress=False,
    ).store.path


def quick_overrides(out: Path) -> list[str]:
    """A tiny synthetic log with feature tokens, and tiny shapes."""
    store = synthesize_store(
        out / "quick_store",
        users=120,
        items=40,
        mean_length=16,
        seed=0,
        feature_tokens=3,
        topics=5,
        overwrite=True,
        progress=False,
    )
    return [
        f"data.dataset={store.path}",
        "data.max_len=8",
        "model.d_model=16",
        "train.epochs=null",
        "train.tokens=2000",
        "train.eval_every_tokens=1000",
    ]


def run_arms(out: Path, seeds: list[int], quick: bool) -> dict[str, Any]:
    base = quick_overrides(out) if quick else []
    pruned = [] if quick else [f"data.dataset={pruned_movielens(out)}"]
    arms = {arm: spec for arm, spec in ARMS.items() if not (quick and spec[1] > 1)}
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for arm, (encoder, min_items) in arms.items():
        for seed in seeds:
            store = pruned if min_items > 1 else []
            overrides = [*base, *store, f"model.item_encoder={encoder}", f"train.seed={seed}"]
            config = load_config(REPO / CONFIG, overrides)
            run_dir = out / "runs" / f"{arm.replace('+', '_')}-seed{seed}"
            summary = train(config, run_dir, progress=not quick)
            runs[arm].append(
                {
                    "seed": seed,
                    "ndcg@10": summary["eval"]["ndcg@10"],
                    "hr@10": summary["eval"]["hr@10"],
                    "loss": summary["eval"]["loss"],
                    "params_total": summary["params_total"],
                    "params_embedding": summary["params_embedding"],
                    "wall_s": summary["wall_s"],
                }
            )
    summary = {
        encoder: {key: mean_std([r[key] for r in rows]) for key in (*METRICS, "wall_s")}
        | {key: rows[0][key] for key in ("params_total", "params_embedding")}
        for encoder, rows in runs.items()
    }
    paired = {
        encoder: {
            key: paired_difference([r[key] for r in runs[encoder]], [r[key] for r in runs["id"]])
            for key in METRICS
        }
        for encoder in list(arms)[1:]
    }
    ratio = {
        encoder: summary[encoder]["ndcg@10"]["mean"] / summary["id"]["ndcg@10"]["mean"]
        for encoder in list(arms)[1:]
    }
    return {
        "config": CONFIG,
        "seeds": seeds,
        "runs": runs,
        "summary": summary,
        "paired_vs_id": paired,
        "ndcg_ratio_to_id": ratio,
    }


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Test NDCG@10 (mean ± std, seeds as dots) and parameters by encoder."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    arms = list(results["summary"])
    for i, encoder in enumerate(arms):
        stats = results["summary"][encoder]["ndcg@10"]
        left.bar(i, stats["mean"], yerr=stats["std"], color="C0", alpha=0.6, capsize=4)
        left.plot(
            [i] * len(results["runs"][encoder]),
            [r["ndcg@10"] for r in results["runs"][encoder]],
            "k.",
        )
        summary = results["summary"][encoder]
        right.bar(
            i - 0.2, summary["params_total"], 0.4, color="C1", label="all" if i == 0 else None
        )
        right.bar(
            i + 0.2,
            summary["params_embedding"],
            0.4,
            color="C2",
            label="embedding" if i == 0 else None,
        )
    for ax in (left, right):
        ax.set_xticks(range(len(arms)), arms, fontsize=8)
    left.set_ylabel("test NDCG@10")
    right.set_ylabel("parameters")
    right.legend()
    fig.tight_layout()
    return save_figure(fig, out, "item_encoder")


def table(results: dict[str, Any]) -> str:
    lines = [
        "| encoder | params (embedding) | NDCG@10 | HR@10 | held-out loss | NDCG@10 / id "
        "| NDCG@10 - id (paired, 95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for encoder in results["summary"]:
        s = results["summary"][encoder]
        cells = [f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in METRICS]
        if encoder == "id":
            ratio, paired = "1", "-"
        else:
            d = results["paired_vs_id"][encoder]["ndcg@10"]
            ratio = f"{results['ndcg_ratio_to_id'][encoder]:.3f}"
            ci = "" if d["ci95"] is None else f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            paired = f"{d['mean']:+.4f}{ci}"
        lines.append(
            f"| {encoder} | {s['params_total']:,} ({s['params_embedding']:,}) | "
            + " | ".join(cells)
            + f" | {ratio} | {paired} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    run_experiment(
        __doc__,
        "item_encoder",
        "a features-encoded model reaches the ID model's NDCG@10 (within 10%) with a "
        "parameter count independent of the catalog",
        lambda args: run_arms(args.out, seeds_of(args), args.quick),
        figure,
        table,
    )


if __name__ == "__main__":
    main()
