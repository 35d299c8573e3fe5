"""The structure families' stored split: round trip, runs written before ``folders``, errors, length rules."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest

from protgen_jax.atomic import save_npz_atomic
from protgen_jax.errors import DataError
from protgen_jax.recipes.structure_split import (
    check_lengths,
    load_split,
    save_split,
    write_split_json,
)


class _Set(NamedTuple):
    names: np.ndarray
    values: np.ndarray


def _sets():
    train = _Set(np.array(["a", "b"]), np.arange(6, dtype=np.float32).reshape(2, 3))
    holdout = _Set(np.array(["c"]), np.full((1, 3), 7.0, np.float32))
    return train, holdout


def test_round_trip_keeps_sets_skipped_folders_and_extras(tmp_path):
    train, holdout = _sets()
    skipped = [("x.pdb", "no CA atoms"), ("y.cif", "unreadable")]
    path = tmp_path / "data.npz"
    save_split(path, train, holdout, skipped, ["/d1", "/d2"], compress=True, offset=np.ones(6))
    stored = load_split(path, _Set, extra=("offset",))
    np.testing.assert_array_equal(stored.train.values, train.values)
    assert stored.holdout.names.tolist() == ["c"]
    assert stored.skipped == skipped and stored.folders == ["/d1", "/d2"]
    np.testing.assert_array_equal(stored.extra["offset"], np.ones(6))


def test_reads_runs_written_with_one_folder(tmp_path):
    train, holdout = _sets()
    path = tmp_path / "data.npz"
    save_npz_atomic(
        path, False, train_names=train.names, train_values=train.values,
        holdout_names=holdout.names, holdout_values=holdout.values,
        skipped=np.zeros((0, 2), str), folder="/old/pdb",
    )  # fmt: skip
    stored = load_split(path, _Set)
    assert stored.folders == ["/old/pdb"] and stored.skipped == []


def test_missing_array_names_the_file(tmp_path):
    train, holdout = _sets()
    path = tmp_path / "data.npz"
    save_split(path, train, holdout, [], ["/d"], compress=False)
    with pytest.raises(DataError, match="data.npz: unreadable run data"):
        load_split(path, _Set, extra=("offset",))


def test_data_json_lists_both_splits(tmp_path):
    train, holdout = _sets()
    write_split_json(
        tmp_path / "data.json", train.names, holdout.names, [("z", "bad")], ["/d"], k=1
    )
    info = json.loads((tmp_path / "data.json").read_text())
    assert info == {
        "folders": ["/d"], "k": 1, "train": ["a", "b"], "holdout": ["c"],
        "skipped": [{"file": "z", "reason": "bad"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("buckets", "min_length", "max_length", "message"),
    [((), 1, 10, "positive"), ((8,), 1, 10, "do not cover"), ((16,), 1, 10, None),
     ((16,), 11, 10, "min_length")],
)  # fmt: skip
def test_length_rules(buckets, min_length, max_length, message):
    config = SimpleNamespace(buckets=buckets, min_length=min_length, max_length=max_length)
    if message is None:
        check_lengths(config)
    else:
        with pytest.raises(DataError, match=message):
            check_lengths(config)
    floor = SimpleNamespace(buckets=(16,), min_length=1, max_length=10)
    with pytest.raises(DataError, match="need 2 <= min_length"):
        check_lengths(floor, min_length_floor=2)
