"""``srt-jax fit`` end to end, its error handling, and the analysis scripts."""

import importlib.util
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_scaling_loaders import write_csv, write_mlflow_db, write_run_dir

from srt_jax.cli import build_parser
from srt_jax.errors import DataError
from srt_jax.scaling import report as report_module
from srt_jax.scaling.laws import ChinchillaLaw

ROOT = Path(__file__).resolve().parents[1]
LAW = ChinchillaLaw(E=1.8, A=450.0, B=1800.0, alpha=0.34, beta=0.36)
FIGURES = ("loss_vs_compute", "optimal_allocation", "fit_residuals", "isoflop_profiles")


def run_fit(argv: list[str]) -> int:
    """Parse ``srt-jax fit ARGV`` with the CLI's parser and run its handler (errors raise)."""
    args = build_parser().parse_args(["fit", *argv])
    return args.handler(args)


def isoflop_csv(path: Path) -> Path:
    """4 budgets x 6 sizes around N*(C), columns N, C, loss (D is derived, k = 6)."""
    rows, rng = [], np.random.default_rng(0)
    for budget in (1e19, 1e20, 1e21, 1e22):
        for factor in np.geomspace(0.1, 10.0, 6):
            n = LAW.optimal_params(budget, 6.0) * factor
            loss = LAW.loss(n, budget / (6 * n)) * np.exp(0.002 * rng.standard_normal())
            rows.append([n, budget, loss])
    return write_csv(path, ["N", "C", "loss"], rows)


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_command_writes_json_figures_and_report(tmp_path, capsys):
    source = isoflop_csv(tmp_path / "points.csv")
    out = tmp_path / "out"
    argv = [str(source), "--out", str(out), "--bootstrap", "20", "--target-compute", "1e23"]
    assert run_fit(argv) == 0
    record = json.loads((out / "fit.json").read_text())
    for key in (
        "alpha",
        "beta",
        "E",
        "A",
        "B",
        "a",
        "b",
        "intervals",
        "objective",
        "convergence",
        "points_used",
        "predictions",
        "identifiability",
        "holdout",
    ):
        assert key in record, key
    assert record["alpha"] == pytest.approx(LAW.alpha, abs=0.05)
    assert record["a"] == pytest.approx(LAW.a, abs=0.05)
    lo, hi = record["intervals"]["alpha"]
    assert lo < record["alpha"] < hi
    assert record["points_used"]["count"] == 24
    assert record["predictions"]["target_compute"] == 1e23
    expected_n = LAW.optimal_params(1e23, 6.0)
    assert record["predictions"]["N_opt"] == pytest.approx(expected_n, rel=0.5)
    assert record["flops_per_param_token"] == {
        "k": pytest.approx(6.0),
        "derived": True,
        "how": "median of C / (N D) over the runs",
    }
    assert record["approach2"]["a"] == pytest.approx(LAW.a, abs=0.05)
    assert "approach1" in record["not_applicable"]  # no training curves in a CSV
    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 0
        assert (out / f"{name}.svg").stat().st_size > 0
        assert f"]({name}.png)" in markdown
    assert not (out / "training_curves.png").exists()
    printed = capsys.readouterr().out
    assert "alpha" in printed and "wrote" in printed


def test_fit_command_on_run_directories_draws_training_curves(tmp_path):
    for i, n in enumerate(np.geomspace(1e6, 3e7, 8)):
        tokens = 1e9 / np.sqrt(n) * 100
        write_run_dir(tmp_path / "runs", f"r{i}", n, tokens, float(LAW.loss(n, tokens)))
    out = tmp_path / "fit"
    assert (
        run_fit(
            [
                str(tmp_path / "runs"),
                "--out",
                str(out),
                "--bootstrap",
                "5",
                "--params",
                "non_embedding",
            ]
        )
        == 0
    )
    record = json.loads((out / "fit.json").read_text())
    assert record["params_kind"] == "non_embedding"
    assert record["points_used"]["runs"][0]["N"] in {0.75 * n for n in np.geomspace(1e6, 3e7, 8)}
    assert (out / "training_curves.png").exists() and (out / "training_curves.svg").exists()
    assert "ndcg@10" in record["alternatives"]["metric_laws"]


def test_bad_input_is_an_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="no such file"):
        run_fit([str(tmp_path / "missing.csv"), "--out", str(out)])
    bad = write_csv(tmp_path / "bad.csv", ["N", "C", "loss"], [[1e8, 1e19, 3.0], [1e8, 1e19, "?"]])
    with pytest.raises(DataError, match=r"bad.csv:3: column 'loss'"):
        run_fit([str(bad), "--out", str(out)])
    assert not out.exists()
    with pytest.raises(SystemExit):
        run_fit([str(bad), "--bootstrap", "-1"])


def test_a_failure_while_writing_leaves_no_partial_output(tmp_path, monkeypatch):
    source = isoflop_csv(tmp_path / "points.csv")

    def broken_figures(report, directory):
        (directory / "half.png").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "draw_all", broken_figures)
    with pytest.raises(RuntimeError, match="disk full"):
        run_fit([str(source), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]


def test_chinchilla_refit_script_prints_the_table(capsys):
    script = load_module(ROOT / "analysis" / "chinchilla_refit.py")
    assert script.main(["--bootstrap", "5"]) == 0
    printed = capsys.readouterr().out
    assert "alpha        0.34731" in printed
    assert "objective (summed Huber): 0.00101827" in printed


def test_analysis_scripts_default_to_the_golden_data_in_the_repository():
    golden = ROOT / "tests" / "data"
    chinchilla = load_module(ROOT / "analysis" / "chinchilla_refit.py")
    srt = load_module(ROOT / "analysis" / "srt_figure.py")
    defaults = (chinchilla.DATA, srt.DEFAULT_DB)
    assert defaults == (golden, golden / "srt_mlruns.sqlite.bz2")
    for name in (
        "chinchilla_svg_extracted.csv",
        "chinchilla_refit_reference.json",
        "srt_mlruns.sqlite.bz2",
    ):
        assert (golden / name).is_file(), f"golden file {golden / name} is missing"


def test_srt_figure_script_on_a_tiny_mlflow_database(tmp_path, capsys):
    database = write_mlflow_db(tmp_path / "mlruns.sqlite")
    script = load_module(ROOT / "analysis" / "srt_figure.py")
    assert script.main([str(database), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "srt_scaling.png").stat().st_size > 0
    assert (tmp_path / "fig" / "srt_scaling.svg").stat().st_size > 0
    assert "100 negatives: 2 runs" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_killed_at_random_moments_leaves_a_whole_result_or_none(tmp_path):
    """SIGKILL ``srt-jax fit`` 6 times at random moments (loading, fitting, bootstrapping,
    drawing, moving): the output directory never holds a fit.json whose figures are
    missing, and the next run removes the killed runs' staging directories."""
    source = isoflop_csv(tmp_path / "points.csv")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "srt_jax.cli", "fit", str(source), "--out", str(out)]
    command += ["--bootstrap", "30", "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    duration = time.perf_counter() - started
    rng = random.Random(0)
    for _ in range(6):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, duration))
        process.send_signal(signal.SIGKILL)
        process.wait()
        record = json.loads((out / "fit.json").read_text())
        for files in record["figures"].values():
            for name in files:
                assert (out / name).is_file(), f"fit.json names a missing {name}"
    subprocess.run(command, check=True, capture_output=True)
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name] == []
