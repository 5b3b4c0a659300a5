"""``srt-jax fit-transfer``: downstream quality of fine-tuned runs against their parent's
pre-training FLOPs (srt_jax/scaling/transfer_curve.py)."""

import json

import numpy as np
import pytest
import yaml

from srt_jax.cli import main
from srt_jax.scaling.frontier import fit_power_law, law_values

BUDGETS = np.array([1e10, 3e10, 1e11, 3e11, 1e12])
LOSS_LAW = {"E": 4.0, "A": 2.0, "alpha": 0.3, "C0": 1e10}
METRIC_LAW = {"M_inf": 0.3, "A": 0.2, "alpha": 0.5, "C0": 1e10}


@pytest.mark.parametrize("law", [LOSS_LAW, METRIC_LAW])
def test_the_fit_recovers_a_known_law(law):
    values = law_values(law, BUDGETS)
    fit = fit_power_law(np.repeat(BUDGETS, 2), np.repeat(values, 2), increasing="M_inf" in law)
    assert fit["identified"] and fit["points"] == 10
    for name, value in law.items():
        assert fit["law"][name] == pytest.approx(value, rel=1e-3), name
    assert fit["rmse"] < 1e-6


def test_the_fit_refuses_fewer_budgets_than_parameters():
    fit = fit_power_law([1e10, 1e10, 1e11], [5.0, 5.1, 4.0], increasing=False)
    assert fit["law"] is None
    assert fit["reason"] == "2 budgets; a law needs 3"


def test_a_curve_that_does_not_saturate_is_marked_not_identified():
    # a straight line in log C: the level runs to the edge of its range (E = 0)
    fit = fit_power_law(BUDGETS, 6.0 - 0.2 * np.log10(BUDGETS / 1e10), increasing=False)
    assert fit["law"] is not None and not fit["identified"]
    assert "saturates" in fit["reason"]


def write_run(root, name, *, params, loss, ndcg, parent_flops=None, freeze=None, status="done"):
    run = root / name
    run.mkdir(parents=True)
    init = None if parent_flops is None else {"parent_flops": parent_flops, "parent_params": 99}
    summary = {
        "status": status,
        "dataset": {"name": "stores/target"},
        "params_total": params,
        "init_from": init,
        "eval": {"loss": loss, "ndcg@10": ndcg},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    transfer = None if freeze is None else {"freeze": freeze}
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"transfer": transfer}}))


def fake_runs(root):
    """3 parent budgets x 2 seeds fine-tuned, the same-size scratch runs, a frozen-backbone
    fine-tune, a failed run and a pre-training run on another store."""
    for i, flops in enumerate(BUDGETS[:3]):
        for seed in (0, 1):
            loss = law_values(LOSS_LAW, np.array([flops]))[0] + 0.01 * seed
            ndcg = law_values(METRIC_LAW, np.array([flops]))[0]
            write_run(root, f"d{i}-s{seed}/ft", params=100 * (i + 1), loss=loss, ndcg=ndcg,
                      parent_flops=flops)  # fmt: skip
            write_run(root, f"d{i}-s{seed}/scratch", params=100 * (i + 1), loss=6.5, ndcg=0.05)
    write_run(root, "frozen", params=100, loss=9.0, ndcg=0.0, parent_flops=1e10, freeze="backbone")
    write_run(root, "failed", params=100, loss=1.0, ndcg=0.9, parent_flops=1e10, status="failed")


def test_fit_transfer_reads_runs_fits_and_writes(tmp_path, capsys):
    fake_runs(tmp_path / "runs")
    out = tmp_path / "fit"
    status = main(["fit-transfer", str(tmp_path / "runs"), "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    analysis = json.loads(captured.out)["analysis"]
    assert analysis["finetuned_runs"] == 6 and analysis["scratch_runs"] == 6
    first = analysis["budgets"][0]
    assert first["parent_flops"] == 1e10 and first["params"] == 100
    assert first["finetuned"]["loss"]["mean"] == pytest.approx(6.005)  # frozen run left out
    assert first["gain"]["loss"] == pytest.approx(6.005 - 6.5)
    assert analysis["metric_law"]["law"]["M_inf"] == pytest.approx(0.3, rel=1e-3)
    assert analysis["metric_gain_per_decade"] > 0
    assert "failed" in captured.err  # the skipped run is named
    for name in ("transfer_fit.json", "transfer_fit.md", "transfer_fit.png", "transfer_fit.svg"):
        assert (out / name).stat().st_size > 0
    assert "| 1e+10 | 99 | 100 |" in (out / "transfer_fit.md").read_text()

    frozen_fit = ["--out", str(tmp_path / "frozen"), "--freeze", "backbone", "--json"]
    frozen = main(["fit-transfer", str(tmp_path / "runs"), *frozen_fit])
    assert frozen == 0
    assert json.loads(capsys.readouterr().out)["analysis"]["finetuned_runs"] == 1


def test_fit_transfer_without_fine_tuned_runs_is_a_clear_error(tmp_path, capsys):
    write_run(tmp_path / "runs", "scratch", params=100, loss=6.5, ndcg=0.05)
    out = tmp_path / "fit"
    assert main(["fit-transfer", str(tmp_path / "runs"), "--out", str(out)]) == 2
    assert "no done fine-tuned run" in capsys.readouterr().err
    assert not out.exists()
    assert main(["fit-transfer", str(tmp_path / "missing")]) == 2
    assert "not a directory of runs" in capsys.readouterr().err
