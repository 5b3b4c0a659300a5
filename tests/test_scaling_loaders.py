"""Importers: plain tables, run directories, sweep exports, MLflow SQLite (tiny and real)."""

import bz2
import csv
import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srt_jax.errors import DataError
from srt_jax.scaling.loaders import ColumnNames, detect_format, load_points
from srt_jax.scaling.mlflow_sqlite import MlflowNames

SRT_DB = Path(__file__).resolve().parent / "data" / "srt_mlruns.sqlite.bz2"  # tests/data/README.md


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_run_dir(
    root: Path, run_id: str, n: float, tokens: float, loss: float, status: str = "done"
) -> Path:
    """A run directory (the layout of srt_jax.train.run_dir): 4 eval points, k = 6."""
    run = root / run_id
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  d_model: {int(n) // 1000}\n")
    lines = []
    for step in range(1, 5):
        t = tokens * step / 4
        lines.append(
            {
                "kind": "train",
                "step": step,
                "tokens": t,
                "flops": 6 * n * t,
                "loss": loss + 1.0,
                "lr": 1e-3,
                "wall_s": step,
            }
        )
        lines.append(
            {
                "kind": "eval",
                "step": step,
                "tokens": t,
                "flops": 6 * n * t,
                "loss": loss + (4 - step) * 0.1,
                "wall_s": step,
                "metrics": {"ndcg@10": 0.01 * step},
            }
        )
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    summary = {
        "run_id": run_id,
        "status": status,
        "params_total": n,
        "params_embedding": n / 4,
        "params_non_embedding": 0.75 * n,
        "flops_per_token": 6 * n,
        "train_flops": 6 * n * tokens,
        "train_tokens": tokens,
        "wall_s": 4.0,
        "eval": {"loss": loss, "ndcg@10": 0.01 * math.log10(n), "hr@10": 0.08},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def write_mlflow_db(path: Path) -> Path:
    """A tiny MLflow-schema database: 2 finished runs, 1 failed, 1 in another experiment."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        create table experiments (experiment_id integer primary key, name text,
            artifact_location text, lifecycle_stage text);
        create table runs (run_uuid text primary key, name text, status text,
            lifecycle_stage text, experiment_id integer);
        create table params (key text, value text, run_uuid text);
        create table metrics (key text, value float, timestamp bigint, run_uuid text,
            step bigint, is_nan boolean);
        insert into experiments values (0, 'Default', '', 'active'), (1, 'sweep', '', 'active');
        """
    )
    runs = [
        ("r1", "FINISHED", 1, 1000, "100"),
        ("r2", "FINISHED", 1, 4000, "300"),
        ("r3", "FAILED", 1, 2000, "100"),
        ("r4", "FINISHED", 0, 3000, "100"),
    ]
    for run, status, experiment, n, negatives in runs:
        db.execute("insert into runs values (?, 'run', ?, 'active', ?)", (run, status, experiment))
        params = {
            "model_total_params": n,
            "model_non_emb_params": n // 10,
            "total_flops": 64,
            "n_inters": 500,
            "train_batch_size": 32,
            "nce_num_negatives": negatives,
        }
        db.executemany(
            "insert into params values (?, ?, ?)", [(k, str(v), run) for k, v in params.items()]
        )
        for step in (4, 9):
            loss = 5.0 - step / 10 - n / 10000
            rows = [
                ("valid/eval_loss", loss),
                ("valid/ndcg_at_5", step / 100),
                ("train/train_loss", loss + 1),
            ]
            for timestamp in (step, step + 0.5):  # MLflow logged some values twice
                db.executemany(
                    "insert into metrics values (?, ?, ?, ?, ?, 0)",
                    [(key, value, timestamp, run, step) for key, value in rows],
                )
    db.commit()
    db.close()
    return path


def test_plain_csv_with_n_d_and_loss(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["N", "D", "loss"], [[1e8, 1e10, 3.0], [2e8, 2e10, 2.8]])
    points = load_points(path)
    np.testing.assert_allclose(points.tokens, [1e10, 2e10])
    np.testing.assert_allclose(points.compute, [6e18, 24e18])  # C = k N D, k = 6
    assert list(points.run_id) == ["line2", "line3"]
    assert detect_format(path) == "csv"


def test_plain_csv_with_compute_named_columns_and_k(tmp_path):
    path = write_csv(
        tmp_path / "p.csv",
        ["params", "flops", "l", "id"],
        [[1e8, 4e18, 3.0, "a"], [1e9, 8e19, 2.5, "b"]],
    )
    names = ColumnNames(n="params", c="flops", loss="l", run_id="id")
    points = load_points(path, columns=names, flops_per_param_token=4.0)
    np.testing.assert_allclose(points.tokens, [1e10, 2e10])  # D = C / (k N)
    np.testing.assert_allclose(points.flops_per_param_token("total"), 4.0)
    assert list(points.run_id) == ["a", "b"]
    with pytest.raises(DataError, match="non_embedding parameter count"):
        points.params("non_embedding")


def test_plain_csv_errors_name_file_line_and_column(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", ["N", "D", "loss"], [[1e8, 1e10, 3.0], [1e8, "x", 3.0]])
    with pytest.raises(DataError, match=r"bad.csv:3: column 'D' is 'x'"):
        load_points(bad)
    no_d = write_csv(tmp_path / "nod.csv", ["N", "loss"], [[1e8, 3.0]])
    with pytest.raises(DataError, match="needs a column 'D'"):
        load_points(no_d)
    negative = write_csv(tmp_path / "neg.csv", ["N", "D", "loss"], [[1e8, 1e10, -1.0]])
    with pytest.raises(DataError, match="loss must be finite and positive"):
        load_points(negative)
    with pytest.raises(DataError, match="no such file"):
        load_points(tmp_path / "missing.csv")


def test_run_directories_skip_unfinished_and_read_curves(tmp_path):
    write_run_dir(tmp_path / "sweep", "a", 1e6, 1e8, 4.0)
    write_run_dir(tmp_path / "sweep" / "nested", "b", 4e6, 2e8, 3.5)
    write_run_dir(tmp_path / "sweep", "c", 2e6, 1e8, 3.9, status="failed")
    points = load_points(tmp_path / "sweep")
    assert detect_format(tmp_path / "sweep") == "runs"
    assert sorted(points.run_id) == ["a", "b"]
    assert points.notes == ("skipped 1 run(s): 1 with status 'failed'",)
    b = list(points.run_id).index("b")
    assert points.n_non_embedding[b] == 3e6
    assert points.compute[b] == pytest.approx(6 * 4e6 * 2e8)
    np.testing.assert_allclose(points.metrics["ndcg@10"], [0.06, 0.01 * math.log10(4e6)])
    curve = points.curves[b]
    np.testing.assert_allclose(curve.tokens, [5e7, 1e8, 1.5e8, 2e8])
    np.testing.assert_allclose(curve.loss, [3.8, 3.7, 3.6, 3.5])
    np.testing.assert_allclose(curve.metrics["ndcg@10"], [0.01, 0.02, 0.03, 0.04])
    best = points.at_best_checkpoint()
    np.testing.assert_allclose(best.loss, points.loss)  # these curves fall to the end


def test_run_directory_errors(tmp_path):
    run = write_run_dir(tmp_path, "a", 1e6, 1e8, 4.0)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:9: not a JSON object"):
        load_points(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    del summary["train_tokens"]
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "metrics.jsonl").unlink()
    with pytest.raises(DataError, match="missing key 'train_tokens'"):
        load_points(tmp_path)
    shutil.rmtree(run)
    write_run_dir(tmp_path, "z", 1e6, 1e8, 4.0, status="running")
    with pytest.raises(DataError, match="no finished run"):
        load_points(tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_sweep_export_with_curves(tmp_path, suffix):
    header = [
        "run_id",
        "status",
        "N",
        "N_non_embedding",
        "N_embedding",
        "D",
        "C",
        "loss",
        "ndcg@10",
        "model.d_model",
    ]
    rows = [
        ["x", "done", 1e6, 8e5, 2e5, 1e8, 6e14, 4.0, 0.05, 64],
        ["y", "failed", 2e6, 1.6e6, 4e5, 1e8, 1.2e15, 3.9, 0.06, 128],
        ["z", "done", 4e6, 3.2e6, 8e5, 2e8, 4.8e15, 3.5, 0.07, 256],
    ]
    curves = [["x", 1, 5e7, 3e14, 4.3], ["x", 2, 1e8, 6e14, 4.0], ["z", 1, 2e8, 4.8e15, 3.5]]
    curve_header = ["run_id", "step", "tokens", "flops", "loss"]
    if suffix == ".csv":
        write_csv(tmp_path / "runs.csv", header, rows)
        write_csv(tmp_path / "curves.csv", curve_header, curves)
    else:
        pq.write_table(
            pa.table({h: [r[i] for r in rows] for i, h in enumerate(header)}),
            tmp_path / "runs.parquet",
        )
        pq.write_table(
            pa.table({h: [r[i] for r in curves] for i, h in enumerate(curve_header)}),
            tmp_path / "curves.parquet",
        )
    assert detect_format(tmp_path) == "export"
    points = load_points(tmp_path)
    assert list(points.run_id) == ["x", "z"]
    assert list(points.metrics) == ["ndcg@10"]  # config columns (with dots) are not metrics
    np.testing.assert_allclose(points.n_non_embedding, [8e5, 3.2e6])
    np.testing.assert_allclose(points.curves[0].loss, [4.3, 4.0])
    assert points.notes == ("skipped 1 run(s): 1 with status 'failed'",)


def test_tiny_mlflow_database(tmp_path):
    path = write_mlflow_db(tmp_path / "mlruns.sqlite")
    assert detect_format(path) == "mlflow"
    points = load_points(path, mlflow=MlflowNames(experiment="sweep"))
    assert list(points.run_id) == ["r1", "r2"]
    assert points.notes[0] == "skipped 1 run(s): 1 with status 'FAILED'"
    np.testing.assert_allclose(points.n_total, [1000, 4000])
    np.testing.assert_allclose(points.n_non_embedding, [100, 400])
    np.testing.assert_allclose(points.tokens, [500 * 10, 500 * 10])  # n_inters x 10 epochs
    np.testing.assert_allclose(points.compute, [64 * 500 / 32 * 10] * 2)  # per batch x batches
    np.testing.assert_allclose(points.loss, [5.0 - 0.9 - 0.1, 5.0 - 0.9 - 0.4])
    np.testing.assert_allclose(points.metrics["ndcg_at_5"], [0.09, 0.09])
    np.testing.assert_allclose(points.curves[0].step, [4, 9])
    np.testing.assert_allclose(points.curves[0].tokens, [2500, 5000])

    every = load_points(path)
    assert sorted(every.run_id) == ["r1", "r2", "r4"]
    filtered = load_points(path, mlflow=MlflowNames(where=(("nce_num_negatives", "100"),)))
    assert sorted(filtered.run_id) == ["r1", "r4"]
    whole_run = load_points(path, mlflow=MlflowNames(experiment="1", compute_unit="run"))
    np.testing.assert_allclose(whole_run.compute, [64, 64])

    packed = tmp_path / "mlruns.sqlite.bz2"
    packed.write_bytes(bz2.compress(path.read_bytes()))
    np.testing.assert_allclose(load_points(packed).loss, every.loss)
    with pytest.raises(DataError, match="no experiment 'nope'"):
        load_points(path, mlflow=MlflowNames(experiment="nope"))
    with pytest.raises(DataError, match="no parameter 'missing'"):
        load_points(path, mlflow=MlflowNames(data_size="missing"))


def test_not_a_database(tmp_path):
    fake = tmp_path / "x.sqlite"
    fake.write_text("hello")
    with pytest.raises(DataError, match="cannot tell its format"):
        load_points(fake)
    with pytest.raises(DataError, match="not a SQLite database"):
        load_points(fake, fmt="mlflow")


def test_real_srt_database(tmp_path):
    unpacked = tmp_path / "srt.sqlite"
    unpacked.write_bytes(bz2.decompress(SRT_DB.read_bytes()))
    points = load_points(unpacked)
    assert len(points) == 119
    run = list(points.run_id).index("e7c0e291091149fa8fad64bfa4be263c")
    assert points.n_total[run] == 1719712
    assert points.n_non_embedding[run] == 10208
    assert points.loss[run] == pytest.approx(4.097118791780974)  # valid/eval_loss, epoch 49
    assert points.tokens[run] == 813811 * 50
    assert points.compute[run] == pytest.approx(82316544.0 * 813811 / 128 * 50)
    assert points.metrics["ndcg_at_5"][run] == pytest.approx(0.0363)
    assert all(c is not None and c.loss.size == 10 for c in points.curves)
    assert set(points.metrics) == {
        "ndcg_at_5",
        "hit_at_5",
        "recall_at_5",
        "mrr_at_5",
        "precision_at_5",
    }
