"""Fuzzing ``data prepare --format tfds``: TFDS datasets with random features, values and
damaged files.

A TFDS input is a dataset directory built by TFDS itself (array_record, no TensorFlow)
from a random variant:

- the layout: one interaction per example (scalar ``user_id``, ``movie_id``, ``timestamp``,
  ``user_rating``, as TFDS's movielens ratings) or one user per example (scalar ``user``,
  1-D ``items``, ``timestamps`` and sometimes ``ratings``, as ``data export-tfds`` writes);
- each feature's type: 64- or 32-bit integers, 32- or 64-bit floats, or text;
- values near the edges: negative, zero, huge, not finite, empty, non-ASCII or NUL text,
  empty histories, and 1-D features of one example with different lengths;
- a required feature left out, or ``--user-col`` naming one that is not there;
- one to 30 examples.

In a third of the inputs one of the dataset's files (the array_record shard,
``dataset_info.json`` or ``features.json``) is then damaged with
:func:`fuzz_inputs.mutate` or deleted. The outcome must be what
:func:`fuzz_inputs.check_prepared` allows: a valid store or a one-line error naming the
dataset, with nothing left behind.

Used by ``tests/test_fuzz_readers.py`` and ``benchmarks/fuzz_readers.py --formats tfds``.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from fuzz_inputs import mutate

from srt_jax.data.readers import ReadOptions

TYPES = ("int64", "int32", "float32", "float64", "text")
"""The feature types drawn."""
INTERACTION_FEATURES = ("user_id", "movie_id", "timestamp", "user_rating")
SEQUENCE_FEATURES = ("user", "items", "timestamps", "ratings")
SEQUENCE_1D = ("items", "timestamps", "ratings")

tfds.disable_progress_bar()  # thousands of tiny builds: no bars


class FuzzTfds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A dataset of the given features and examples (dataset name ``fuzz_tfds``)."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, features: dict[str, Any], examples: list[dict], **kwargs: Any) -> None:
        self._features, self._examples = features, examples
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(self._features),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict]]:
        yield from enumerate(self._examples)


def value(kind: str, rng: random.Random, edges: float) -> Any:
    """One scalar of feature type ``kind``: ordinary, or with probability ``edges`` at an
    edge."""
    edge = rng.random() < edges
    if kind in ("int64", "int32"):
        top = 2**62 if kind == "int64" else 2**31 - 1
        return rng.choice([-1, 0, top, -top]) if edge else rng.randint(1, 30)
    if kind.startswith("float"):
        if edge:
            return rng.choice([float("nan"), float("inf"), -float("inf"), -0.0, 1e30, -2.5])
        return float(rng.randint(1, 30)) + rng.choice([0.0, 0.5])
    if edge:
        return rng.choice(["", " 7 ", "x\x00y", "é", "1e3", "-4"])
    return str(rng.randint(1, 30))


def feature(kind: str, sequence: bool) -> Any:
    """The TFDS feature of type ``kind``, 1-D when ``sequence``."""
    if kind == "text":
        return tfds.features.Sequence(tfds.features.Text()) if sequence else tfds.features.Text()
    dtype = np.dtype(kind)
    return tfds.features.Tensor(shape=(None,), dtype=dtype) if sequence else dtype


def dataset_variant(rng: random.Random) -> tuple[dict[str, Any], list[dict]]:
    """The features and examples of a random dataset (see the module docstring)."""
    sequences = rng.random() < 0.5
    names = list(SEQUENCE_FEATURES if sequences else INTERACTION_FEATURES)
    if rng.random() < 0.1:
        names.remove(rng.choice(names))
    retyped = rng.random() < 0.5
    kinds = {name: rng.choice(TYPES) if retyped else "int64" for name in names}
    edges = rng.choice([0.0, 0.0, 0.02, 0.2])
    for name in ("user_rating", "ratings"):
        if name in kinds and kinds[name] == "int64":
            kinds[name] = "float32"
    examples = []
    for _ in range(rng.randint(1, 30)):  # TFDS builds no dataset of 0 examples
        length = rng.choice([0, *range(1, 9)]) if rng.random() < 0.1 else rng.randint(1, 8)
        example = {}
        for name, kind in kinds.items():
            if sequences and name in SEQUENCE_1D:
                n = length + (rng.choice([-1, 1]) if rng.random() < 0.02 else 0)
                values = [value(kind, rng, edges) for _ in range(max(n, 0))]
                example[name] = values if kind == "text" else np.array(values, kind)
            else:
                example[name] = value(kind, rng, edges)
        examples.append(example)
    features = {
        name: feature(kind, sequences and name in SEQUENCE_1D) for name, kind in kinds.items()
    }
    return features, examples


def make_tfds_input(seed: int, work: Path) -> tuple[Path, ReadOptions]:
    """Build TFDS fuzz input ``seed`` under ``work``: the dataset directory and the options
    to read it with."""
    rng = random.Random(seed)
    features, examples = dataset_variant(rng)
    builder = FuzzTfds(
        features=features,
        examples=examples,
        data_dir=str(work / "tfds"),
        file_format="array_record",
    )
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints two lines per build
        builder.download_and_prepare(download_dir=str(work / "downloads"))
    dataset = Path(builder.data_dir)
    if rng.random() < 1 / 3:
        target = rng.choice(sorted(p for p in dataset.iterdir() if p.is_file()))
        if rng.random() < 0.2:
            target.unlink()
        else:
            target.write_bytes(mutate(target.read_bytes(), rng))
    user_col = "uid" if rng.random() < 0.03 else None
    return dataset, ReadOptions(user_col=user_col)
