"""``srt-jax quickstart``: data, a real IsoFLOP sweep, the fit, figures; resumable; the shipped
spec is the one it runs by default."""

import json

import pytest
from test_sweep_spec import tiny_data, write_spec

from srt_jax.cli import main
from srt_jax.commands.quickstart import QUICKSTART_SPEC, with_dataset
from srt_jax.sweep.registry import Registry
from srt_jax.sweep.spec import expand, load_spec


def tiny_spec(tmp_path):
    spec = {
        "name": "qs-test",
        "config": {
            "data": tiny_data(tmp_path / "cache"),
            "train": {"batch_size": 8},
            "eval": {"batch_users": 32},
        },
        "shapes": "tiny",
        "isoflop": {"budgets": [3.0e8, 1.0e9], "evals_per_run": 3},
    }
    return write_spec(tmp_path / "qs.yaml", spec)


@pytest.mark.slow
def test_quickstart_sweeps_fits_writes_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["quickstart", "--data", "synthetic", "--spec", str(tiny_spec(tmp_path))]
    argv += ["--out", str(out), "--workers", "2", "--bootstrap", "10"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "\r" not in captured.err and captured.err.endswith("\n")  # a log: whole lines
    finished = [line for line in captured.err.splitlines() if "done 8 running 0" in line]
    assert len(finished) == 1, finished  # the sweep's last progress line, once
    assert printed.splitlines()[0].startswith("srt-jax quickstart:")
    assert "at most 10 minutes" in printed.splitlines()[0]
    with Registry(out / "qs-test" / "sweep") as registry:
        assert registry.counts()["done"] == 8
    fit_dir = out / "qs-test" / "fit"
    fit = json.loads((fit_dir / "fit.json").read_text())
    assert fit["objective"]["points"] == 8 and fit["bootstrap"]["resamples"] == 10
    figures = sorted(p.name for p in fit_dir.glob("*.png"))
    assert "isoflop_profiles.png" in figures and "loss_vs_compute.png" in figures
    for name in figures:
        assert str(fit_dir / name) in printed
    assert printed.count(str(fit_dir / "report.md")) == 1  # the final output, once

    assert main(argv) == 0  # again: nothing left to train, the fit is rewritten
    again = capsys.readouterr().out
    assert "(8 done, 0 running, 0 pending, 0 failed" in again

    assert main([*argv, "--json", "--quiet"]) == 0  # the same summary as one JSON object
    captured = capsys.readouterr()
    assert captured.err == ""
    summary = json.loads(captured.out)
    assert summary["counts"] == {"done": 8, "running": 0, "pending": 0, "failed": 0}
    assert summary["report"] == str(fit_dir / "report.md") and summary["fit"]["objective"]


def test_shipped_quickstart_spec_is_a_4_by_4_isoflop_sweep_on_either_dataset():
    spec = load_spec(QUICKSTART_SPEC)
    assert spec.isoflop is not None and len(spec.isoflop.budgets) == 4
    budgets = sorted(spec.isoflop.budgets)  # two budgets for the extrapolation check's refit
    assert budgets[1] <= budgets[-1] / 10
    assert spec.base["data"]["dataset"] == "movielens-100k"
    assert with_dataset(spec, "movielens-100k") is spec
    synthetic = with_dataset(spec, "synthetic")
    assert synthetic.base["data"]["dataset"] == "synthetic"
    assert synthetic.name == "quickstart-synthetic"
    assert synthetic.base["train"] == spec.base["train"]


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["quickstart", "--data", "movielens-1m"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_expansion_of_the_synthetic_quickstart_runs_every_combination():
    expansion = expand(with_dataset(load_spec(QUICKSTART_SPEC), "synthetic"))
    assert len(expansion.runs) == 16 and not expansion.skipped
