"""``srt-jax train`` / ``srt-jax eval``: errors exit 2 naming the key; train then eval."""

import json

import pytest
import yaml

from srt_jax.cli import main
from srt_jax.config import dump_config, load_config

TINY = {
    "data": {
        "dataset": "synthetic",
        "synthetic": {"users": 120, "items": 30, "mean_length": 14},
        "max_len": 8,
    },
    "model": {"d_model": 16, "n_layers": 1, "n_heads": 2},
    "train": {"batch_size": 16, "epochs": 2, "log_every": 5},
    "eval": {"batch_users": 64},
}


@pytest.fixture
def config_path(tmp_path):
    config = {**TINY, "data": {**TINY["data"], "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def error_of(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_unknown_set_key_exits_2_naming_it(capsys, config_path):
    err = error_of(capsys, ["train", str(config_path), "--set", "train.bogus=1"])
    assert "train.bogus" in err and "learning_rate" in err  # and what is allowed


def test_unknown_optimizer_exits_2_naming_it_and_writes_nothing(capsys, config_path, tmp_path):
    out = tmp_path / "run"
    argv = ["train", str(config_path), "--set", "train.optimizer=lion", "--out", str(out)]
    err = error_of(capsys, argv)
    assert len(err.strip().splitlines()) == 1
    assert "train.optimizer = 'lion'" in err and "'usgm'" in err and not out.exists()


def test_bad_value_exits_2_naming_key(capsys, config_path):
    err = error_of(capsys, ["train", str(config_path), "--set", "model.dropout=1.5"])
    assert "model.dropout" in err


def test_bad_config_file_exits_2_naming_file_line_and_key(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  d_model: 64\n  n_layerz: 2\n")
    err = error_of(capsys, ["train", str(path)])
    assert f"{path}:3" in err and "model.n_layerz" in err
    assert "not found" in error_of(capsys, ["train", str(tmp_path / "missing.yaml")])


def test_run_dir_of_another_config_exits_2_naming_the_difference(capsys, config_path, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = load_config(config_path, ["model.d_model=32"])
    (run_dir / "config.yaml").write_text(dump_config(other))
    err = error_of(capsys, ["train", str(config_path), "--out", str(run_dir)])
    assert "model.d_model: 32 -> 16" in err


def test_eval_of_a_directory_without_a_run_exits_2(capsys, tmp_path):
    assert "config file not found" in error_of(capsys, ["eval", str(tmp_path)])


def test_eval_of_a_run_without_checkpoints_exits_2_and_writes_nothing(
    capsys, config_path, tmp_path
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(load_config(config_path)))
    assert "no checkpoint to evaluate" in error_of(capsys, ["eval", str(run_dir)])
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def test_train_then_eval(capsys, config_path, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "ndcg@10" in out and "filtered" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["step"] == summary["eval"]["step"]
    assert result["protocol"]["checkpoint"].startswith("best validation ndcg@10")
    assert result["metrics"]["ndcg@10"] == pytest.approx(summary["eval"]["ndcg@10"])
    assert main(["eval", str(run_dir), "--split", "valid"]) == 0
    table = capsys.readouterr().out
    assert "valid split" in table and "mrr@20" in table


def test_a_run_that_fails_exits_1_where_bad_input_exits_2(
    capsys, config_path, tmp_path, monkeypatch
):
    from test_loop import _nan_loss

    from srt_jax.train import step

    monkeypatch.setattr(step, "compute_loss", _nan_loss)
    run_dir = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(run_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("srt-jax: error: non-finite loss at step 1")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
