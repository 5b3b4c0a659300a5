"""``srt-jax fit --group-by``: each run's value of a key, split fits and their comparison."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_scaling_cli import run_fit
from test_scaling_loaders import write_csv, write_mlflow_db, write_run_dir

from srt_jax.cli import main
from srt_jax.commands.fit import flat_config
from srt_jax.errors import DataError
from srt_jax.scaling.groups import split_points
from srt_jax.scaling.laws import ChinchillaLaw
from srt_jax.scaling.loaders import ColumnNames, load_points
from srt_jax.scaling.run_values import load_run_values

LAWS = {  # two backbones with different laws and FLOPs per parameter-token k
    "transformer": (ChinchillaLaw(E=1.8, A=450.0, B=1800.0, alpha=0.34, beta=0.36), 6.0),
    "mamba": (ChinchillaLaw(E=2.0, A=300.0, B=2500.0, alpha=0.30, beta=0.42), 8.0),
}
EXPORT_HEADER = ["run_id", "status", "N", "N_non_embedding", "N_embedding", "D", "C", "loss"]


def two_law_export(path: Path) -> Path:
    """A sweep-export runs.csv: an IsoFLOP design (4 budgets x 5 sizes) per backbone of
    LAWS, 3 runs of a third backbone (too few to fit) and one failed run; config columns
    model.backbone and model.d_model."""
    rows, rng = [], np.random.default_rng(0)
    for name, (law, k) in LAWS.items():
        for budget in (1e19, 1e20, 1e21, 1e22):
            for factor in np.geomspace(0.1, 10.0, 5):
                n = law.optimal_params(budget, k) * factor
                loss = law.loss(n, budget / (k * n)) * np.exp(0.001 * rng.standard_normal())
                row = [f"{name}{len(rows)}", "done", n, 0.8 * n, 0.2 * n, budget / (k * n)]
                rows.append([*row, budget, loss, name, 64])
    for i in range(3):
        n, c = 1e8 * (i + 1), 6e18 * (i + 1)
        rows.append([f"rwkv{i}", "done", n, 0.8 * n, 0.2 * n, 1e10, c, 3.0, "rwkv", 64])
    rows.append(["lost", "failed", 1e8, 8e7, 2e7, 1e10, 6e18, "", "mamba", 64])
    return write_csv(path, [*EXPORT_HEADER, "model.backbone", "model.d_model"], rows)


def test_group_by_fits_each_backbone_and_writes_the_comparison(tmp_path, capsys):
    source = two_law_export(tmp_path / "runs.csv")
    out = tmp_path / "out"
    argv = [str(source), "--out", str(out), "--group-by", "model.backbone", "--bootstrap", "3"]
    assert run_fit(argv) == 0
    for name, (law, k) in LAWS.items():
        record = json.loads((out / name / "fit.json").read_text())
        assert record["points_used"]["count"] == 20
        for key in ("alpha", "beta", "a"):
            assert record[key] == pytest.approx(getattr(law, key), abs=0.03), (name, key)
        assert record["E"] == pytest.approx(law.E, rel=0.05)
        assert record["flops_per_param_token"]["k"] == pytest.approx(k)
        assert record["predictions"]["target_compute"] == pytest.approx(1e23)  # shared: 10x max C
        assert f"runs with model.backbone = {name}" in record["notes"]
        assert (out / name / "report.md").exists() and (out / name / "loss_vs_compute.svg").exists()
    assert not (out / "rwkv").exists()
    for suffix in ("png", "svg"):
        assert (out / f"compare_loss_vs_compute.{suffix}").stat().st_size > 0

    compare = json.loads((out / "compare.json").read_text())
    assert compare["group_by"] == "model.backbone" and compare["target_compute"] == pytest.approx(
        1e23
    )
    rows = {row["value"]: row for row in compare["groups"]}
    assert list(rows) == ["mamba", "rwkv", "transformer"]
    assert rows["rwkv"] == {
        "value": "rwkv",
        "directory": "rwkv",
        "runs": 3,
        "fitted": False,
        "reason": "3 run(s), too few to fit (the law has 5 parameters: at least 5 runs)",
    }
    mamba_law, mamba_k = LAWS["mamba"]
    assert rows["mamba"]["beta"] == pytest.approx(mamba_law.beta, abs=0.03)
    assert rows["mamba"]["loss_at_target"] == pytest.approx(
        mamba_law.frontier_loss(1e23, mamba_k), rel=0.01
    )
    assert set(rows["mamba"]["intervals"]) >= {"alpha", "loss_at_target"}

    markdown = (out / "compare.md").read_text()
    assert (
        "| model.backbone | runs | grade | E | A | alpha | B | beta | a | b | k | L* at target |"
        in markdown
    )
    grade = "supported" if rows["transformer"]["supported"] else "NOT supported"
    assert (
        f"| [transformer](transformer/report.md) | 20 | {grade} (extrapolation error " in markdown
    )
    assert "- rwkv: not fitted: 3 run(s), too few to fit" in markdown
    assert "](compare_loss_vs_compute.png)" in markdown
    printed = capsys.readouterr().out
    assert "== model.backbone = rwkv (3 runs): not fitted: 3 run(s), too few to fit" in printed
    assert f"== model.backbone = mamba (20 runs) -> {out / 'mamba'}" in printed
    assert "fitted 2 of 3 groups of model.backbone" in printed


def test_unknown_group_key_is_an_error_naming_it(tmp_path, capsys):
    source = two_law_export(tmp_path / "runs.csv")
    out = tmp_path / "out"
    argv = ["fit", str(source), "--out", str(out), "--bootstrap", "0"]
    assert main([*argv, "--group-by", "model.backbon"]) == 2
    assert "no run has a value of 'model.backbon' to group by (did you mean model.backbone?)" in (
        capsys.readouterr().err
    )
    with pytest.raises(
        DataError, match=r"'train\.lr'.*available: run_id, status, N, .*model\.d_model"
    ):
        run_fit([*argv[1:], "--group-by", "train.lr"])
    assert not out.exists()


def test_no_group_large_enough_is_an_error(tmp_path):
    rows = [
        [f"r{i}", "done", 1e6 * (i + 1), 8e5, 2e5, 1e8, 6e14 * (i + 1), 4.0 - i / 10, b]
        for i, b in enumerate("xxyyy")
    ]
    source = write_csv(tmp_path / "runs.csv", [*EXPORT_HEADER, "model.backbone"], rows)
    with pytest.raises(DataError, match=r"no group of model.backbone could be fitted \(x: 2 run"):
        run_fit([str(source), "--out", str(tmp_path / "out"), "--group-by", "model.backbone"])
    assert not (tmp_path / "out").exists()


def test_run_values_of_run_directories_come_from_config_yaml(tmp_path):
    root = tmp_path / "sweep"
    for i, backbone in enumerate(["mamba", "transformer", "mamba"]):
        run = write_run_dir(root / "runs", f"r{i}", 1e6 * (i + 1), 1e8, 4.0 - i / 10)
        (run / "config.yaml").write_text(
            f"model:\n  backbone: {backbone}\n  mamba:\n    d_state: {(8, 128, 16)[i]}\n"
            "train:\n  lr_schedule: [1, 2]\n"
        )
    (write_run_dir(root / "runs", "old", 5e6, 1e8, 3.5) / "config.yaml").unlink()
    write_run_dir(root / "runs", "busy", 6e6, 1e8, 3.4, status="running")

    def split_by(key):
        return split_points(load_points(root), load_run_values(root, key, read_config=flat_config))

    values = load_run_values(root, "model.backbone", read_config=flat_config)
    assert values.values == {
        "r0": "mamba",
        "r1": "transformer",
        "r2": "mamba",
        "old": None,  # no config.yaml
        "busy": None,  # config.yaml without the key (and not finished: not fitted either)
    }
    assert "model.mamba.d_state" in values.available
    lists = load_run_values(root, "train.lr_schedule", read_config=flat_config)
    assert lists.values["r2"] == "[1, 2]"
    split = split_by("model.backbone")
    assert list(split) == ["mamba", "transformer", "unset"]
    assert list(split["mamba"].run_id) == ["r0", "r2"] and list(split["unset"].run_id) == ["old"]
    assert split["unset"].notes[-1] == "runs without a value of model.backbone"
    assert list(split_by("model.mamba.d_state")) == ["8", "16", "128", "unset"]  # numeric order
    (root / "runs" / "r1" / "config.yaml").write_text("model:\n  backbone: unset\n")
    with pytest.raises(DataError, match=r"model\.backbone has the value 'unset'"):
        split_by("model.backbone")
    with pytest.raises(DataError, match=r"did you mean model\.backbone\?"):  # the CLI reads it
        run_fit([str(root), "--out", str(tmp_path / "out"), "--group-by", "model.backbon"])


def test_run_values_of_tables_parquet_exports_and_mlflow(tmp_path):
    plain = write_csv(
        tmp_path / "plain.csv",
        ["N", "C", "loss", "arch"],
        [[1e6, 1e15, 4.0, "a"], [2e6, 2e15, 3.9, ""]],
    )
    values = load_run_values(plain, "arch")
    assert values.values == {"line2": "a", "line3": None}
    assert list(load_points(plain).run_id) == list(values.values)  # the same run ids
    named = load_run_values(plain, "arch", columns=ColumnNames(run_id="N"))
    assert named.values == {"1000000.0": "a", "2000000.0": None}

    table = {"run_id": ["x", "y"], "status": ["done", "done"], "model.backbone": ["mamba", None]}
    pq.write_table(pa.table(table), tmp_path / "runs.parquet")
    values = load_run_values(tmp_path, "model.backbone", fmt="export")
    assert values.values == {"x": "mamba", "y": None}

    database = write_mlflow_db(tmp_path / "mlruns.sqlite")
    values = load_run_values(database, "nce_num_negatives")
    assert values.values == {"r1": "100", "r2": "300", "r4": "100"}
    assert "model_total_params" in values.available


def test_a_run_id_with_two_values_is_an_error(tmp_path):
    table = write_csv(
        tmp_path / "t.csv",
        ["run_id", "N", "C", "loss", "arch"],
        [["a", 1, 1, 1, "x"], ["a", 2, 2, 1, "y"]],
    )
    with pytest.raises(DataError, match="run a appears twice with different values of 'arch'"):
        load_run_values(table, "arch")
