"""Item features of a store: each item's attribute tokens as a ragged array plus a vocabulary.

A store prepared with ``--item-features FILE`` holds, beside the interactions,

- ``feature_vocab.json``  the token strings, ``["[pad]", "[no-features]", ...]``: index 0 is
                          never stored, index 1 is the token of an item without features,
                          and the rest are the tokens of the store's items in sorted order.
                          A token is ``column=value`` (``class=Drama``, ``movie_title=usual``),
                          so equal strings in two stores are the same token.
- ``feature_tokens.npy``  int32 [n_feature_tokens]: token indices, items concatenated in item
                          index order.
- ``feature_offsets.npy`` int64 [n_items + 2]: item i's tokens are
                          ``tokens[offsets[i]:offsets[i + 1]]``; item 0 (padding) has none,
                          every real item has at least one.

and ``meta.json``'s ``item_features`` record: the side table read, its columns, the counts of
items with and without features, of feature rows that match no item of the log, and of bad
rows skipped. :func:`features_for_items` builds the arrays from a side table read by
:func:`srt_jax.data.readers.read_item_table`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srt_jax.errors import DataError

PAD_TOKEN = "[pad]"
NO_FEATURES = "[no-features]"
NO_FEATURES_INDEX = 1
VOCAB_FILE = "feature_vocab.json"
TOKENS_FILE = "feature_tokens.npy"
OFFSETS_FILE = "feature_offsets.npy"
FILES = (VOCAB_FILE, TOKENS_FILE, OFFSETS_FILE)


@dataclass(frozen=True)
class ItemFeatures:
    """The feature tokens of a catalog of ``n_items`` items (see the module docstring).

    Attributes:
      vocab: token strings; ``vocab[0]`` is padding, ``vocab[1]`` the "no features" token.
      tokens: int32 [n_feature_tokens] token indices, items in index order.
      offsets: int64 [n_items + 2]; item i's tokens are ``tokens[offsets[i]:offsets[i+1]]``.
    """

    vocab: tuple[str, ...]
    tokens: np.ndarray
    offsets: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of real items (indices 1..n_items)."""
        return len(self.offsets) - 2

    @property
    def vocab_size(self) -> int:
        """Rows of a token table: ``len(vocab)`` (row 0 = padding, never used)."""
        return len(self.vocab)

    @property
    def counts(self) -> np.ndarray:
        """int64 [n_items + 1]: tokens per item index (entry 0, padding, is 0)."""
        return np.diff(self.offsets)

    @property
    def token_items(self) -> np.ndarray:
        """int32 [n_feature_tokens]: the item index each token belongs to (sorted)."""
        return np.repeat(np.arange(self.n_items + 1, dtype=np.int32), self.counts)

    @property
    def items_without_features(self) -> int:
        """Items whose only token is the "no features" token."""
        only = self.counts[1:] == 1
        return int(np.count_nonzero(self.tokens[self.offsets[1:-1][only]] == NO_FEATURES_INDEX))

    def item_tokens(self, item: int) -> list[str]:
        """Token strings of item index ``item``."""
        return [self.vocab[t] for t in self.tokens[self.offsets[item] : self.offsets[item + 1]]]

    def save(self, folder: Path) -> None:
        """Write the three files into ``folder`` (a store being built)."""
        (folder / VOCAB_FILE).write_text(json.dumps(list(self.vocab), ensure_ascii=False) + "\n")
        np.save(folder / TOKENS_FILE, self.tokens.astype(np.int32))
        np.save(folder / OFFSETS_FILE, self.offsets.astype(np.int64))

    @classmethod
    def load(cls, folder: Path, n_items: int) -> ItemFeatures:
        """Read and check the files of the store at ``folder`` (catalog of ``n_items``)."""
        try:
            vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
            tokens = np.load(folder / TOKENS_FILE)
            offsets = np.load(folder / OFFSETS_FILE)
        except (OSError, ValueError) as err:
            raise DataError(f"{folder}: cannot read the item features: {err}") from None
        features = cls(tuple(vocab), tokens, offsets)
        features.check(folder, n_items)
        return features

    def check(self, where: Any, n_items: int) -> None:
        """DataError unless the arrays are a valid ragged array over ``n_items`` items."""
        off, tok = self.offsets, self.tokens
        problems = []
        if not (isinstance(self.vocab, tuple) and all(isinstance(t, str) for t in self.vocab)):
            problems.append("the vocabulary is not a list of strings")
        elif self.vocab[:2] != (PAD_TOKEN, NO_FEATURES):
            problems.append(f"the vocabulary must start with {PAD_TOKEN!r}, {NO_FEATURES!r}")
        if tok.dtype != np.int32 or tok.ndim != 1 or off.dtype != np.int64 or off.ndim != 1:
            problems.append("tokens must be 1-D int32 and offsets 1-D int64")
        elif len(off) != n_items + 2 or off[0] != 0 or off[1] != 0 or off[-1] != len(tok):
            problems.append(f"offsets must have n_items + 2 = {n_items + 2} entries, 0, 0 first")
        elif np.any(np.diff(off)[1:] < 1):
            problems.append("every item must have at least one token")
        elif len(tok) and (tok.min() < 1 or tok.max() >= len(self.vocab)):
            problems.append(f"token indices must lie in 1..{len(self.vocab) - 1}")
        if problems:
            raise DataError(f"{where}: invalid item features: {problems[0]}")


def features_for_items(
    item_ids: np.ndarray,
    table_ids: Sequence[str],
    table_tokens: Sequence[Sequence[str]],
    *,
    min_token_items: int = 1,
) -> tuple[ItemFeatures, dict[str, int]]:
    """The features of a store's items from a side table.

    Args:
      item_ids: [n_items + 1] the store's original item ids (entry 0 is padding).
      table_ids: original item id (as text) of each side-table row, unique.
      table_tokens: token strings of each row, aligned with ``table_ids``.
      min_token_items: drop the tokens that fewer than this many of the store's items carry
        (a title word of one film is an item id in disguise); an item left without tokens
        gets the "no features" token.

    Returns:
      the features (items without a row, or with an empty one, get the "no features" token)
      and counts: ``items_with_features``, ``items_without_features``, ``rows_unmatched``
      (side-table rows for items the log does not have), ``tokens_dropped`` (by
      ``min_token_items``).

    Raises:
      DataError: no row of the side table matches an item of the store.
    """
    by_id = dict(zip(table_ids, table_tokens, strict=True))
    per_item = [by_id.get(str(item), ()) for item in item_ids[1:].tolist()]
    matched = sum(str(item) in by_id for item in item_ids[1:].tolist())
    if len(item_ids) > 1 and matched == 0:
        examples = ", ".join(repr(i) for i in list(by_id)[:3])
        raise DataError(
            f"no row of the item features matches an item of the log (feature ids such as "
            f"{examples}; log ids such as {', '.join(repr(str(i)) for i in item_ids[1:4])})"
        )
    items_per_token = Counter(token for tokens in per_item for token in set(tokens))
    rare = {token for token, n in items_per_token.items() if n < min_token_items}
    if rare:
        per_item = [[token for token in tokens if token not in rare] for tokens in per_item]
    features = from_token_lists(per_item)
    without = features.items_without_features
    return features, {
        "items_with_features": len(per_item) - without,
        "items_without_features": without,
        "rows_unmatched": len(by_id) - matched,
        "tokens_dropped": len(rare),
    }


def subset_features(features: ItemFeatures, items: np.ndarray) -> ItemFeatures:
    """The features of a sub-catalog: new item i (1-based) is old item ``items[i - 1]``; the
    vocabulary keeps only the tokens the sub-catalog uses."""
    return from_token_lists([features.item_tokens(int(item)) for item in items])


def from_token_lists(per_item: Sequence[Sequence[str]]) -> ItemFeatures:
    """Features of items 1..len(per_item) from their token strings (an empty list: the
    "no features" token); the vocabulary is the specials, then the tokens sorted."""
    lists = [list(tokens) or [NO_FEATURES] for tokens in per_item]
    used = {token for tokens in lists for token in tokens} - {NO_FEATURES, PAD_TOKEN}
    vocab = (PAD_TOKEN, NO_FEATURES, *sorted(used))
    index = {token: i for i, token in enumerate(vocab)}
    counts = np.array([0] + [len(tokens) for tokens in lists], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    tokens = np.array([index[t] for item in lists for t in item], dtype=np.int32)
    return ItemFeatures(vocab, tokens, offsets)
