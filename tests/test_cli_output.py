"""``--quiet`` and ``--json`` on every command: with ``--json`` stdout is one JSON object (the
final summary) and nothing else; with ``--quiet`` nothing but errors reaches stderr."""

import json
import subprocess
import sys

import pytest
import yaml
from test_scaling_cli import isoflop_csv
from test_sweep_plan import iso_spec
from test_train_cli import TINY

from srt_jax.cli import build_parser, commands_of, main


def test_every_command_has_quiet_and_json():
    commands = commands_of(build_parser())
    assert len(commands) >= 17
    for command in commands:
        options = set(command._option_string_actions)
        assert {"--quiet", "--json"} <= options, command.prog


def run_json(capsys, argv: list[str]) -> dict:
    """``srt-jax ARGV --json --quiet``: exit 0, stdout one JSON object, stderr empty."""
    assert main([*argv, "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "", captured.err
    return json.loads(captured.out)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    config = {**TINY, "data": {**TINY["data"], "cache_dir": str(root / "cache")}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root


def test_data_commands(capsys, tmp_path):
    store = tmp_path / "syn"
    argv = ["data", "synth", "--out", str(store), "--users", "60", "--items", "20"]
    synth = run_json(capsys, [*argv, "--mean-length", "10", "--seed", "0"])
    assert synth["store"] == str(store) and synth["users"] == 60 and synth["oracle_loss"] > 0
    info = run_json(capsys, ["data", "info", str(store)])
    assert info["n_users"] == 60 and info["source"] == "synthetic"
    assert main(["data", "info", str(store)]) == 0  # the text of a generated store
    assert "source         synthetic" in capsys.readouterr().out


def test_train_and_eval(capsys, trained_run):
    summary = json.loads((trained_run / "run" / "summary.json").read_text())
    again = run_json(
        capsys, ["train", str(trained_run / "tiny.yaml"), "--out", str(trained_run / "run")]
    )
    assert again["run_dir"] == str(trained_run / "run") and again["run_id"] == summary["run_id"]
    assert again["eval"] == summary["eval"]
    result = run_json(capsys, ["eval", str(trained_run / "run")])
    assert result["metrics"]["ndcg@10"] == pytest.approx(summary["eval"]["ndcg@10"])


def test_sweep_plan_fit_and_doctor(capsys, tmp_path):
    plan = run_json(capsys, ["sweep", "plan", str(iso_spec(tmp_path, "tiny")), "--no-calibrate"])
    assert plan["sweep"] == "iso" and plan["runs"] and plan["skipped"]
    assert all(run["seconds"] is None and run["params"] > 0 for run in plan["runs"])
    source = isoflop_csv(tmp_path / "iso.csv")
    fit = run_json(capsys, ["fit", str(source), "--out", str(tmp_path / "fit"), "--bootstrap", "3"])
    assert fit["out"] == str(tmp_path / "fit") and fit["fit"]["objective"]["points"] == 24
    assert json.loads((tmp_path / "fit" / "fit.json").read_text()) == fit["fit"]
    assert run_json(capsys, ["doctor"])["jax_backend"] == "cpu"


def test_quiet_without_json_prints_only_the_final_summary(capsys, tmp_path):
    argv = ["data", "synth", "--out", str(tmp_path / "s"), "--users", "50", "--items", "20"]
    argv += ["--mean-length", "10"]
    assert main([*argv, "--seed", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.count("\n") == 1 and captured.out.startswith(f"wrote {tmp_path / 's'}")


def test_the_cli_starts_without_jax():
    """Command modules import JAX and Flax inside the handlers that train or plan, so that
    `srt-jax --help`, `data`, `fit` and `advise` start in about a second."""
    code = "import sys, srt_jax.cli; print(sorted({'jax', 'flax', 'optax'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
