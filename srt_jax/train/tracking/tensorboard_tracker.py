"""The TensorBoard tracker: event files in ``RUN_DIR/tensorboard/`` (tensorboardX).

Every ``metrics.jsonl`` line's scalars at its optimiser step, the resolved config as text
(``config``), and at the end the test figures as scalars (``test/...``), the config and
the test figures in TensorBoard's HParams view, the protocol as text, and the
learning-curve figure as an image. ``tensorboard --logdir RUN_DIR`` (or a sweep's
``ROOT/runs``) shows them; a resumed session adds a new event file to the same directory.
"""

from __future__ import annotations

from pathlib import Path

from srt_jax.config import RunConfig, dump_config, flat_dict, to_dict
from srt_jax.train.tracking.records import FinalRecord

LOG_DIR = "tensorboard"


def _hparam_value(value: object) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


class TensorBoardTracker:
    """Writes one run's TensorBoard event files (see the module docstring)."""

    name = "tensorboard"

    def __init__(self, config: RunConfig, run_dir: Path, run_id: str) -> None:
        from tensorboardX import SummaryWriter

        self.config = config
        self.writer = SummaryWriter(logdir=str(run_dir / LOG_DIR), flush_secs=30)
        self.writer.add_text("config", f"```\n{dump_config(config)}```", 0)
        self.writer.add_text("run_id", run_id, 0)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_final(self, final: FinalRecord) -> None:
        import matplotlib.image
        from tensorboardX.summary import hparams

        self.log_scalars(final.step, final.scalars)
        config = {k: _hparam_value(v) for k, v in flat_dict(to_dict(self.config)).items()}
        for summary in hparams(config, final.scalars):
            self.writer.file_writer.add_summary(summary)
        text = "\n".join(f"- **{k}**: {v}" for k, v in final.tags.items())
        self.writer.add_text("protocol", text, final.step)
        image = matplotlib.image.imread(final.figure)[..., :3]
        self.writer.add_image("curves", image, final.step, dataformats="HWC")

    def close(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()
