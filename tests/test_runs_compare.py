"""``srt-jax runs compare``: config differences, final figures, curves figure, JSON, errors."""

import json

import pytest
from test_loop import tiny_config

from srt_jax.cli import main
from srt_jax.config import dump_config
from srt_jax.train.loop import train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for name, width in (("narrow", 16), ("wide", 32)):
        train(tiny_config(root / "cache", f"model.d_model={width}"), root / name, progress=False)
    unfinished = root / "unfinished"  # a run that has written its config and nothing else
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(dump_config(tiny_config(root / "cache")))
    return root


def test_compare_lists_the_differing_keys_and_the_final_figures(two_runs, capsys, tmp_path):
    runs = [str(two_runs / name) for name in ("narrow", "wide", "unfinished")]
    out = tmp_path / "cmp"
    assert main(["runs", "compare", *runs, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == runs
    assert result["config_differences"] == {"model.d_model": [16, 32, 16]}  # nothing else
    narrow, wide = (
        json.loads((two_runs / n / "summary.json").read_text()) for n in ("narrow", "wide")
    )
    figures = result["figures"]
    assert figures[runs[0]]["test_ndcg@10"] == narrow["eval"]["ndcg@10"]
    assert figures[runs[1]]["params_non_embedding"] == wide["params_non_embedding"]
    assert figures[runs[1]]["train_tokens"] == wide["train_tokens"] == 2500
    unfinished = figures[runs[2]]  # still training: a status, no figures
    assert unfinished.pop("status") == "running"
    assert set(unfinished) == set(figures[runs[0]]) - {"status"}
    assert all(value is None for value in unfinished.values())
    assert json.loads((out / "compare.json").read_text())["config_differences"]
    assert (out / "compare_curves.png").stat().st_size > 0
    assert (out / "compare_curves.svg").stat().st_size > 0

    assert main(["runs", "compare", *runs[:2], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model.d_model" in text and "A: " + runs[0] in text and "test_ndcg@10" in text


def test_the_same_config_twice_has_no_differences(two_runs, capsys, tmp_path):
    runs = [str(two_runs / "narrow"), str(two_runs / "unfinished")]
    assert main(["runs", "compare", *runs, "--out", str(tmp_path)]) == 0
    assert "config differences: none" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv_of, message",
    [
        (lambda root: [str(root / "narrow"), str(root / "missing")], "not a run directory"),
        (lambda root: [str(root / "narrow"), str(root / "narrow")], "at least two different"),
    ],
)
def test_bad_run_directories_exit_2_and_write_nothing(two_runs, capsys, tmp_path, argv_of, message):
    out = tmp_path / "cmp"
    assert main(["runs", "compare", *argv_of(two_runs), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
