"""``sweep export``: runs and curves tables that the scaling loader reads back exactly."""

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import sweep_fake_run

from srt_jax.config import RunConfig, config_hash, replace, to_dict
from srt_jax.scaling.loaders import EXPORT_COLUMNS, load_points
from srt_jax.sweep import export as export_module
from srt_jax.sweep.export import export_sweep, flatten
from srt_jax.sweep.registry import NewRun, Registry


@pytest.fixture
def finished_sweep(tmp_path, monkeypatch):
    """A registry of 4 runs: 3 done by the fake run function, 1 still pending."""
    monkeypatch.setenv("FAKE_RUN_LOG", str(tmp_path / "starts.log"))
    monkeypatch.setenv("FAKE_STEP_S", "0")
    configs = [
        replace(RunConfig(), [f"model.d_model={d}", f"train.tokens={t}", "train.epochs=null"])
        for d, t in ((8, 1200), (16, 800), (24, 1600), (32, 400))
    ]
    registry = Registry(tmp_path / "root", create=True)
    registry.set_name("export")
    registry.add_runs(
        NewRun(config_hash(c), to_dict(c), 1000 + i, 900 + i, c.train.tokens, 1e6 * (i + 1))
        for i, c in enumerate(configs)
    )
    for config in configs[:3]:
        claim = registry.claim("w", heartbeat_timeout=60, max_attempts=3)
        summary = sweep_fake_run.train(config, claim.run_dir)
        assert registry.complete(claim.run_id, "w", summary)
    registry.close()
    return tmp_path / "root", configs


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_is_read_back_by_the_scaling_loader(finished_sweep, fmt):
    root, configs = finished_sweep
    runs_path, _ = export_sweep(root, fmt=fmt)
    assert runs_path == root / "export" / f"runs.{fmt}"
    points = load_points(runs_path.parent)
    done = {config_hash(c): c for c in configs[:3]}
    assert sorted(points.run_id) == sorted(done)
    assert any("status 'pending'" in note for note in points.notes)
    for i, run_id in enumerate(points.run_id):
        summary = json.loads((root / "runs" / run_id / "summary.json").read_text())
        assert points.n_total[i] == summary["params_total"]
        assert points.n_non_embedding[i] == summary["params_non_embedding"]
        assert points.tokens[i] == summary["train_tokens"]
        assert points.compute[i] == pytest.approx(summary["train_flops"])
        assert points.loss[i] == pytest.approx(summary["eval"]["loss"])
        assert points.metrics["ndcg@10"][i] == pytest.approx(summary["eval"]["ndcg@10"])
        curve = points.curves[i]
        evals = [
            json.loads(line)
            for line in (root / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in line
        ]
        np.testing.assert_array_equal(curve.step, [e["step"] for e in evals])
        np.testing.assert_allclose(curve.loss, [e["loss"] for e in evals])
        np.testing.assert_allclose(curve.flops, [e["flops"] for e in evals])
        np.testing.assert_allclose(
            curve.metrics["ndcg@10"], [e["metrics"]["ndcg@10"] for e in evals]
        )


def test_runs_table_columns_pending_rows_and_flat_config(finished_sweep):
    root, configs = finished_sweep
    runs_path, _ = export_sweep(root, root / "out", "csv")
    with runs_path.open() as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    assert tuple(header[:8]) == EXPORT_COLUMNS  # what srt-jax fit reads
    assert header[8] == "U"  # unique tokens per epoch: read by the data-constrained fit
    assert header[9] == "ndcg@10"  # metric columns have no dot, every other extra column has
    assert all("." in column for column in header[10:])
    pending = next(r for r in rows if r["status"] == "pending")
    assert pending["run_id"] == config_hash(configs[3])
    assert (pending["N"], pending["N_non_embedding"], pending["N_embedding"]) == (
        "1003",
        "903",
        "100",
    )
    assert (pending["D"], pending["loss"], pending["model.d_model"]) == ("400", "", "32")
    assert pending["eval.cutoffs"] == "[5, 10, 20]"
    table = pq.read_table(export_sweep(root, root / "pq", "parquet")[0]).to_pydict()
    assert table["model.d_model"] == [int(r["model.d_model"]) for r in rows]
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {
        "a.b": 1,
        "a.c": "[1, 2]",
        "d": None,
    }


def test_a_failed_export_leaves_the_previous_tables_and_no_temporary_file(
    finished_sweep, monkeypatch
):
    root, _ = finished_sweep
    runs_path, curves_path = export_sweep(root)
    before = runs_path.read_text(), curves_path.read_text()
    real_write = export_module._write

    def failing_write(path, columns, rows):
        if path.name.startswith(".curves"):
            raise OSError("disk full")
        real_write(path, columns, rows)

    monkeypatch.setattr(export_module, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        export_sweep(root)
    assert (runs_path.read_text(), curves_path.read_text()) == before
    assert sorted(p.name for p in runs_path.parent.iterdir()) == ["curves.csv", "runs.csv"]
