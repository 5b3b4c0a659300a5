"""Do larger pre-trained models fine-tune better on a small downstream domain?

Claim (SRT, Zivic et al. 2024, arXiv 2412.07585): with a catalog-independent item encoder
(pooled feature tokens), a model pre-trained on one domain moves to another catalog, and
"performance scaling translates to downstream tasks": the larger the pre-trained model, the
better it does after fine-tuning on a small target domain.

Protocol: two pairs of domains whose catalogs are disjoint but whose item features share a
vocabulary (tokens are matched by string, :mod:`srt_jax.train.init_from`):

- ``synthetic``: two synthetic logs (``srt-jax data synth``) with different seeds and
  disjoint item ids, 16 topics, each item carrying 3 feature tokens drawn from its topic's
  own 8 (20% from a shared noise pool); the source has 4,000 users, the target 300.
- ``movielens``: MovieLens-100K split by genre with ``srt-jax data subset``: the source is
  every user's history restricted to the films that are not comedies, the target the
  comedies (``class=Comedy``), for a seeded sample of 300 users. Shared tokens: the other
  genres, release years and title words.

A ladder of 4 transformer widths (d_model 16, 32, 64, 128; 2 layers, 2 heads, window 50,
``model.item_encoder: features``, mean pooling, batch 32, AdamW 1e-3) is pre-trained on the
source for a fixed number of tokens (so pre-training compute grows with the width), then
fine-tuned on the target (``train.init_from``, everything trainable) for a fixed number of
tokens; each width is also trained from scratch on the target for the same tokens — equal
fine-tuning compute. Seeds 0, 1, 2 (each seed its own pre-training). Reported per domain and
width: pre-training FLOPs, the target's test NDCG@10 and held-out loss after fine-tuning
and from scratch (mean ± std), their paired difference with a 95% t interval, and fits of
the fine-tuned held-out loss and NDCG@10 against pre-training compute by the library that
``srt-jax fit-transfer`` runs (:mod:`srt_jax.scaling.transfer_curve`).

    python experiments/transfer.py [--quick] [--out DIR] [--seeds 0 1 2]
        [--domains synthetic movielens] [--widths 16 32 64 128] [--finetune-tokens N]
        [--frozen-arm]

``--frozen-arm`` adds a third arm on the target, fine-tuning with the backbone frozen
(``train.transfer.freeze: backbone``: only the token table trains); ``--finetune-tokens``
changes the fine-tuning budget (both arms).

Writes ``results.json``, ``transfer.png`` / ``.svg`` and ``table.md`` into ``--out`` (default
``experiments_out/transfer``). ``--quick`` runs two tiny widths on a tiny synthetic pair
(what the test runs); its numbers mean nothing. Conclusions: docs/experiments/transfer.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, mean_std, paired_difference, plt, run_experiment, save_figure, seeds_of

from srt_jax.commands.fit import flat_config
from srt_jax.config import DataConfig, load_config
from srt_jax.data.sources import open_dataset
from srt_jax.data.subsets import items_with_tokens, subset_store
from srt_jax.data.synthetic import synthesize_store
from srt_jax.scaling.frontier import law_values
from srt_jax.scaling.transfer_curve import analyse_transfer, law_text, read_runs, target_runs
from srt_jax.train.loop import train

CONFIG = "configs/ml100k_sasrec_fast.yaml"
WIDTHS = (16, 32, 64, 128)
DOMAINS = ("synthetic", "movielens")
QUICK_WIDTHS = (8, 16)
SYNTHETIC = {"topics": 16, "feature_tokens": 3, "topic_tokens": 8, "mean_length": 30}
BUDGETS = {"pretrain_tokens": 300_000, "finetune_tokens": 40_000}
QUICK_BUDGETS = {"pretrain_tokens": 3_000, "finetune_tokens": 1_000}
TARGET_USERS = 300
METRICS = ("ndcg@10", "loss")


def synthetic_pair(root: Path, quick: bool) -> dict[str, Path]:
    """The synthetic source and target stores (disjoint item ids, one token vocabulary)."""
    users = {"source": 150, "target": 60} if quick else {"source": 4000, "target": TARGET_USERS}
    items = 40 if quick else 600
    options = {**SYNTHETIC, "topics": 4} if quick else SYNTHETIC
    return {
        name: synthesize_store(
            root / f"synthetic_{name}",
            users=users[name],
            items=items,
            seed=seed,
            item_id_offset=offset,
            overwrite=True,
            progress=False,
            **options,
        ).path
        for name, seed, offset in (("source", 1, 0), ("target", 2, 1_000_000))
    }


def movielens_pair(root: Path) -> dict[str, Path]:
    """MovieLens-100K split by genre: non-comedies (source), comedies of 300 users (target)."""
    store = open_dataset(DataConfig(dataset="movielens-100k"))
    comedy = items_with_tokens(store, ["class=Comedy"])
    others = ~comedy
    others[0] = False
    return {
        "source": subset_store(
            store, root / "ml_source", others, overwrite=True, meta={"items_without": "Comedy"}
        ).path,
        "target": subset_store(
            store,
            root / "ml_target",
            comedy,
            max_users=TARGET_USERS,
            overwrite=True,
            meta={"items_with": "Comedy"},
        ).path,
    }


def run_config(store: Path, width: int, seed: int, tokens: int, quick: bool, *more: str):
    window = ["data.max_len=8"] if quick else []
    return load_config(
        REPO / CONFIG,
        [
            f"data.dataset={store}",
            *window,
            "model.item_encoder=features",
            f"model.d_model={width}",
            "train.epochs=null",
            f"train.tokens={tokens}",
            f"train.eval_every_tokens={max(tokens // 5, 1)}",
            f"train.seed={seed}",
            *more,
        ],
    )


def figures_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "ndcg@10": summary["eval"]["ndcg@10"],
        "loss": summary["eval"]["loss"],
        "train_flops": summary["train_flops"],
        "params": summary["params_total"],
        "wall_s": summary["wall_s"],
    }


def run_domain(
    name: str,
    stores: dict[str, Path],
    widths: tuple[int, ...],
    seeds: list[int],
    out: Path,
    quick: bool,
    budgets: dict[str, int],
    frozen_arm: bool,
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    tuned_arms = ("finetuned", "scratch", *(("frozen",) if frozen_arm else ()))
    for width in widths:
        arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ("pretrain", *tuned_arms)}
        for seed in seeds:
            runs = out / "runs" / name / f"d{width}-seed{seed}"
            parent = f"train.init_from={runs / 'pretrain'}"
            target_arms = {
                "finetuned": (parent,),
                "scratch": (),
                "frozen": (parent, "train.transfer.freeze=backbone"),
            }
            pre = train(
                run_config(stores["source"], width, seed, budgets["pretrain_tokens"], quick),
                runs / "pretrain",
                progress=not quick,
            )
            arms["pretrain"].append(figures_of(pre))
            for arm in tuned_arms:
                config = run_config(
                    stores["target"],
                    width,
                    seed,
                    budgets["finetune_tokens"],
                    quick,
                    *target_arms[arm],
                )
                summary = train(config, runs / arm, progress=not quick)
                init = summary["init_from"] or {}
                arms[arm].append(
                    {**figures_of(summary), "tokens_matched": init.get("tokens_matched")}
                )
        rows[str(width)] = {
            "pretrain_flops": arms["pretrain"][0]["train_flops"],
            "params": arms["finetuned"][0]["params"],
            "tokens_matched": arms["finetuned"][0]["tokens_matched"],
            "runs": arms,
            **{
                arm: {key: mean_std([r[key] for r in arms[arm]]) for key in METRICS} for arm in arms
            },
            "gain": {
                key: paired_difference(
                    [r[key] for r in arms["finetuned"]], [r[key] for r in arms["scratch"]]
                )
                for key in METRICS
            },
        }
    runs, _ = read_runs(out / "runs" / name, "ndcg@10", flat_config)
    analysis = analyse_transfer(*target_runs(runs, out, None), "ndcg@10")
    fitted = {key: analysis[key] for key in ("loss_law", "metric_law", "metric_gain_per_decade")}
    return {"stores": {k: str(v) for k, v in stores.items()}, "widths": rows, "fit": fitted}


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    out, quick, seeds = args.out, args.quick, seeds_of(args)
    stores_root = out / "stores"
    names = ["synthetic"] if quick else args.domains
    pairs = {"synthetic": lambda: synthetic_pair(stores_root, quick)}
    pairs["movielens"] = lambda: movielens_pair(stores_root)
    widths = QUICK_WIDTHS if quick else tuple(args.widths)
    budgets = dict(QUICK_BUDGETS if quick else BUDGETS)
    if args.finetune_tokens:
        budgets["finetune_tokens"] = args.finetune_tokens
    return {
        "config": CONFIG,
        "seeds": seeds,
        "budgets": budgets,
        "domains": {
            name: run_domain(
                name, pairs[name](), widths, seeds, out, quick, budgets, args.frozen_arm
            )
            for name in names
        },
    }


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--finetune-tokens", type=int, help="default 40,000")
    parser.add_argument("--frozen-arm", action="store_true", help="add the frozen-backbone arm")


def figure(results: dict[str, Any], out: Path) -> list[Path]:
    """Per domain: target NDCG@10 and held-out loss against pre-training FLOPs, fine-tuned
    and from scratch (same width, same fine-tuning tokens), with the fitted loss curve."""
    domains = results["domains"]
    fig, axes = plt.subplots(len(domains), 2, figsize=(11, 4 * len(domains)), squeeze=False)
    for (name, domain), (left, right) in zip(domains.items(), axes, strict=True):
        rows = domain["widths"]
        flops = [rows[w]["pretrain_flops"] for w in rows]
        for ax, key in ((left, "ndcg@10"), (right, "loss")):
            for arm, style in (("finetuned", "o-"), ("scratch", "s--")):
                means = [rows[w][arm][key]["mean"] for w in rows]
                stds = [rows[w][arm][key]["std"] for w in rows]
                ax.errorbar(flops, means, yerr=stds, fmt=style, capsize=3, label=arm)
            for w, c in zip(rows, flops, strict=True):
                ax.annotate(f"d{w}", (c, rows[w]["finetuned"][key]["mean"]), fontsize=8)
            ax.set_xscale("log")
            ax.set_xlabel("pre-training FLOPs")
            ax.set_title(
                f"{name}: target {'test NDCG@10' if key == 'ndcg@10' else 'held-out loss'}"
            )
        for ax, key in ((left, "metric_law"), (right, "loss_law")):
            law = domain["fit"][key]["law"]
            if law:
                grid = np.geomspace(min(flops), max(flops), 50)
                ax.plot(grid, law_values(law, grid), "k:", label=f"fit, alpha={law['alpha']:.2f}")
        left.legend()
        right.legend()
    fig.tight_layout()
    return save_figure(fig, out, "transfer")


def table(results: dict[str, Any]) -> str:
    lines = []
    for name, domain in results["domains"].items():
        lines += [
            f"**{name}**",
            "",
            "| width | params | pre-training FLOPs | tokens shared | NDCG@10 fine-tuned | "
            "NDCG@10 scratch | gain (paired, 95% CI) | loss fine-tuned | loss scratch |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        frozen = all("frozen" in row for row in domain["widths"].values())
        if frozen:
            lines[-2] += " NDCG@10 / loss frozen backbone |"
            lines[-1] += "---|"
        for width, row in domain["widths"].items():
            gain = row["gain"]["ndcg@10"]
            ci = (
                "" if gain["ci95"] is None else f" [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}]"
            )
            cells = [
                f"{row[arm][key]['mean']:.4f} ± {row[arm][key]['std']:.4f}"
                for key, arm in (("ndcg@10", "finetuned"), ("ndcg@10", "scratch"))
            ]
            losses = [
                f"{row[arm]['loss']['mean']:.3f} ± {row[arm]['loss']['std']:.3f}"
                for arm in ("finetuned", "scratch")
            ]
            lines.append(
                f"| d{width} | {row['params']:,} | {row['pretrain_flops']:.3g} | "
                f"{row['tokens_matched']:,} | {cells[0]} | {cells[1]} | {gain['mean']:+.4f}{ci} | "
                f"{losses[0]} | {losses[1]} |"
                + (
                    f" {row['frozen']['ndcg@10']['mean']:.4f} / "
                    f"{row['frozen']['loss']['mean']:.3f} |"
                    if frozen
                    else ""
                )
            )
        fitted = domain["fit"]
        lines.append(f"\nFine-tuned NDCG@10: {law_text(fitted['metric_law'])}.")
        lines.append(f"Fine-tuned held-out loss: {law_text(fitted['loss_law'])}.")
        if fitted["metric_gain_per_decade"] is not None:
            lines.append(
                f"NDCG@10 gain over scratch changes by {fitted['metric_gain_per_decade']:+.4f} "
                "per decade of pre-training compute."
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    run_experiment(
        __doc__,
        "transfer",
        "larger pre-trained models fine-tune better on a small downstream domain "
        "(performance scaling translates to downstream tasks)",
        run_study,
        figure,
        table,
        options=options,
    )


if __name__ == "__main__":
    main()
