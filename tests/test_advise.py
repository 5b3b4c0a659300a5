"""``srt-jax advise``: advice from a supported fit, refusals with reasons."""

import json

import numpy as np
import pytest
import yaml
from test_scaling_cli import LAW, isoflop_csv, run_fit

from srt_jax.cli import main
from srt_jax.scaling.advice import data_advice, metric_expectation, nearest_shape


@pytest.fixture(scope="module")
def supported_fit(tmp_path_factory):
    root = tmp_path_factory.mktemp("advise")
    out = root / "fit"
    assert not run_fit(
        [str(isoflop_csv(root / "points.csv")), "--out", str(out), "--bootstrap", "50"]
    )
    assert json.loads((out / "fit.json").read_text())["supported"]
    return out


def advise(capsys, *argv):
    status = main(["advise", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_advice_at_a_budget_beyond_the_runs(supported_fit, tmp_path, capsys):
    out = tmp_path / "advice"
    status, printed, err = advise(
        capsys, supported_fit, "--compute", 1e23, "--unique-tokens", 1e11, "--out", out, "--json"
    )
    assert status == 0, err
    advice = json.loads(printed)["advice"]
    assert advice["N_opt"] == pytest.approx(LAW.optimal_params(1e23, 6.0), rel=0.3)
    assert advice["D_opt"] == pytest.approx(1e23 / (advice["k"] * advice["N_opt"]))
    assert advice["loss"] == pytest.approx(LAW.frontier_loss(1e23, 6.0), rel=0.01)
    for name in ("N_opt", "D_opt", "loss"):
        lo, hi = advice["intervals"][name]
        assert lo <= advice[name] <= hi, name
    assert advice["extrapolation_decades"] == pytest.approx(1.0)
    assert advice["data"]["epochs"] == pytest.approx(advice["D_opt"] / 1e11)
    assert advice["data"]["epochs"] > 4 and "optimistic" in advice["data"]["note"]
    assert "**N* = " in (out / "advice.md").read_text()
    assert json.loads((out / "advice.json").read_text()) == advice


def test_a_budget_in_gpu_hours(supported_fit, tmp_path, capsys):
    argv = [supported_fit, "--gpu-hours", 1000, "--device-flops", 1e15, "--utilization", 0.5]
    status, printed, _ = advise(capsys, *argv, "--out", tmp_path, "--json")
    assert status == 0
    assert json.loads(printed)["advice"]["compute"] == pytest.approx(1000 * 3600 * 1e15 * 0.5)
    status, _, err = advise(capsys, supported_fit, "--gpu-hours", 10)
    assert status == 2 and "--device-flops" in err


@pytest.mark.parametrize(
    ("compute", "message"),
    [(1e15, "below the smallest run"), (1e26, "more than 3 decades beyond the largest run")],
)
def test_a_budget_out_of_range_is_refused(supported_fit, tmp_path, capsys, compute, message):
    status, _, err = advise(capsys, supported_fit, "--compute", compute, "--out", tmp_path / "a")
    assert status == 2 and message in err
    assert not (tmp_path / "a").exists()


def test_an_unsupported_fit_is_refused_with_its_reasons(supported_fit, tmp_path, capsys):
    """The grade itself is tested on a flat fit in test_scaling_validation.py; here a
    supported fit.json marked as a flat fit's grade marks it."""
    out = tmp_path / "fit"
    out.mkdir()
    record = json.loads((supported_fit / "fit.json").read_text())
    reason = "exponents not identified by the data: alpha's 95% interval is 900% of its estimate"
    record["supported"], record["grade"]["reasons"] = False, [reason]
    (out / "fit.json").write_text(json.dumps(record))
    status, _, err = advise(capsys, out, "--compute", 1e22)
    assert status == 2
    assert "not supported by its data, so no advice" in err and "not identified" in err
    assert not (out / "advice.json").exists()
    status, _, err = advise(capsys, tmp_path / "nowhere", "--compute", 1e22)
    assert status == 2 and "no fit.json" in err


def test_the_ladder_shape_nearest_the_optimum(supported_fit, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    data = {"dataset": "synthetic", "cache_dir": str(tmp_path / "cache"), "max_len": 8}
    data["synthetic"] = {"users": 40, "items": 30, "mean_length": 10}
    config.write_text(yaml.safe_dump({"data": data}))
    argv = ["--compute", 1e22, "--config", config, "--ladder", "tiny", "--out", tmp_path]
    status, printed, err = advise(capsys, supported_fit, *argv, "--json")
    assert status == 0, err
    advice = json.loads(printed)["advice"]
    shape = advice["shape"]
    assert shape["label"].startswith("2x24")  # the largest: N* is far beyond the tiny ladder
    assert "extend the ladder" in shape["note"]
    assert advice["data"]["unique_tokens"] > 0  # from the config's store


def test_nearest_shape_and_epochs_by_hand():
    shapes = {"small": 1e6, "medium": 1e7, "large": 1e8}
    shape = nearest_shape(shapes, 2e7, 6e15, 6.0)
    assert shape["label"] == "medium" and shape["tokens"] == pytest.approx(1e8)
    assert shape["params_vs_optimal"] == pytest.approx(0.5) and "note" not in shape
    assert data_advice(5e9, 1e10)["epochs"] == 0.5
    assert "advice stands" in data_advice(3e10, 1e10)["note"]


def test_metric_expectation_uses_the_saturating_law_when_identified():
    law = {"M_inf": 0.3, "A": 0.2, "alpha": 0.5, "C0": 1e10}
    trend = {"form": "m(C) = a + b ln C", "a": -2.0, "b": 0.1}
    saturating = {"law": law, "identified": True}
    value = metric_expectation({**trend, "saturating": saturating}, 4e10)
    assert value["value"] == pytest.approx(0.3 - 0.2 * 4**-0.5)
    flat = {"law": law, "identified": False, "reason": "level at the edge of its range"}
    value = metric_expectation({**trend, "saturating": flat}, 1e11)
    assert value["value"] == pytest.approx(-2.0 + 0.1 * np.log(1e11))
    assert "level at the edge" in value["form"]
    assert metric_expectation(trend, 1e3)["value"] == 0.0  # the trend is clipped to [0, 1]
