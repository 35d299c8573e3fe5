"""The train / held-out split that every structure family keeps with its run (backbone, FoldingDiff, design).

A structure run stores two padded sets of one type (a NamedTuple or a class listing its array ``FIELDS``),
the files its loader skipped (``(file, reason)`` pairs), its source folders and any extra arrays in
``RUN/data.npz`` (``train_<field>``, ``holdout_<field>``, ``skipped [S, 2]``, ``folders [F]``); ``data.json``
lists the chain names of each split and the skipped files for people. Runs written before ``folders``
existed hold one ``folder`` string; :func:`load_split` reads both.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from protgen_jax.atomic import save_json_atomic, save_npz_atomic
from protgen_jax.data import resolve
from protgen_jax.data.structures import Chain, load_folder, split_holdout
from protgen_jax.errors import DataError

SPLITS = ("train", "holdout")


class StoredSplit(NamedTuple):
    """What :func:`load_split` reads back: the two sets, the skipped files, the folders, the extras."""

    train: Any
    holdout: Any
    skipped: list[tuple[str, str]]
    folders: list[str]
    extra: dict[str, np.ndarray]


def set_fields(set_type: type) -> tuple[str, ...]:
    """The array fields of a padded set type (``FIELDS`` of a class, ``_fields`` of a NamedTuple)."""
    return tuple(getattr(set_type, "FIELDS", None) or set_type._fields)


def check_lengths(config: Any, min_length_floor: int = 1) -> None:
    """The length rules every structure config shares: positive buckets that cover ``max_length``, and
    ``min_length_floor <= min_length <= max_length``.

    Raises:
      DataError: naming the offending keys and values.
    """
    if not config.buckets or min(config.buckets) < 1:
        raise DataError(f"buckets must be positive lengths, got {config.buckets}")
    if max(config.buckets) < config.max_length:
        raise DataError(
            f"buckets {config.buckets} do not cover max_length={config.max_length}; "
            "add a bucket or lower max_length"
        )
    if not min_length_floor <= config.min_length <= config.max_length:
        raise DataError(
            f"need {min_length_floor} <= min_length <= max_length, got {config.min_length}, "
            f"{config.max_length}"
        )


def load_and_split(
    folder: Path, config: Any, progress: bool
) -> tuple[list[Chain], list[Chain], list[tuple[str, str]]]:
    """Every usable chain of ``folder`` (``config.chain``, ``min_length``, ``max_length``), split into
    train / held-out by chain name (``holdout_fraction``, ``split_seed``), and the skipped files.

    Raises:
      DataError: fewer than 2 usable chains, or every chain held out.
    """
    chains, skipped = load_folder(
        folder, config.chain or None, config.min_length, config.max_length, progress=progress
    )
    if len(chains) < 2:
        raise DataError(f"{folder}: {len(chains)} usable chains (need >= 2); skipped {skipped[:3]}")
    train, holdout = split_holdout(chains, config.holdout_fraction, config.split_seed)
    if not train:
        raise DataError(f"{folder}: every chain fell in the holdout; lower holdout_fraction")
    return train, holdout, list(skipped)


def resolve_folder(spec: str, default: str) -> Path:
    """``spec`` as a folder: "" -> the registry's ``default/pdb``, "@NAME" -> ``NAME/pdb``."""
    spec = spec or f"@{default}"
    if spec.startswith("@"):
        return resolve(spec[1:]) / "pdb"
    return Path(spec)


def manifest_holdout(folder: Path) -> set[str] | None:
    """The file stems of the ``val`` split in ``folder/../manifest.csv`` (cgdms' own lists), or None
    when there is no manifest with a ``split`` column."""
    path = folder.parent / "manifest.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "split" not in rows[0] or "name" not in rows[0]:
        return None
    return {row["name"] for row in rows if row["split"] != "train"}


def _held_out(chain: Chain, stems: set[str]) -> bool:
    return chain.name in stems or chain.name.rsplit("_", 1)[0] in stems


def load_folders(
    specs: list[tuple[str, str]], config: Any, progress: bool, need_holdout: bool = True
) -> tuple[list[Chain], list[Chain], list[tuple[str, str]], list[str]]:
    """Every usable chain of several folders (``config.min_length`` .. ``max_length``; chain
    ``config.chain`` of each file when the config has one, else the first protein chain), split by whole
    chains and pooled.

    ``specs`` are ``(spec, default registry name)`` pairs for :func:`resolve_folder`. A folder with a
    ``manifest.csv`` beside it keeps that manifest's train / val lists (cgdms' own split); any other
    folder is split by :func:`split_holdout` (``holdout_fraction``, ``split_seed``). Skipped files are
    named ``folder/file``.

    Returns:
      (train chains, held-out chains, skipped ``(file, reason)``, the folders as strings).

    Raises:
      DataError: no training chain, or no held-out chain when ``need_holdout``.
    """
    train: list[Chain] = []
    holdout: list[Chain] = []
    skipped: list[tuple[str, str]] = []
    folders = []
    chain = getattr(config, "chain", "") or None
    for spec, default in specs:
        folder = resolve_folder(spec, default)
        chains, bad = load_folder(
            folder, chain, config.min_length, config.max_length, progress=progress
        )
        skipped.extend((f"{folder.name}/{f}", r) for f, r in bad)
        stems = manifest_holdout(folder)
        if stems is None:
            tr, ho = split_holdout(chains, config.holdout_fraction, config.split_seed)
        else:
            tr = [c for c in chains if not _held_out(c, stems)]
            ho = [c for c in chains if _held_out(c, stems)]
        train.extend(tr)
        holdout.extend(ho)
        folders.append(str(folder))
    if not train or (need_holdout and not holdout):
        raise DataError(
            f"{', '.join(folders)}: {len(train)} training and {len(holdout)} held-out chains "
            f"(need >= 1 each); skipped {skipped[:3]}"
        )
    return train, holdout, skipped, folders


def save_split(
    path: Path,
    train: Any,
    holdout: Any,
    skipped: list[tuple[str, str]],
    folders: list[str],
    *,
    compress: bool,
    **extra: np.ndarray,
) -> None:
    """Write both sets, the skipped files, the folders and ``extra`` arrays to ``path`` atomically."""
    fields = set_fields(type(train))
    arrays = {f"{name}_{field}": getattr(data, field)
              for name, data in zip(SPLITS, (train, holdout), strict=True) for field in fields}  # fmt: skip
    save_npz_atomic(
        path, compress, **arrays, **extra,
        skipped=np.array(skipped, dtype=str).reshape(-1, 2),
        folders=np.array(folders, dtype=str),
    )  # fmt: skip


def load_split(path: Path, set_type: type, extra: tuple[str, ...] = ()) -> StoredSplit:
    """Read what :func:`save_split` wrote; ``set_type(*arrays)`` rebuilds each set.

    Raises:
      DataError: a missing or unreadable file, or a missing array.
    """
    fields = set_fields(set_type)
    try:
        with np.load(path, allow_pickle=False) as npz:
            sets = [set_type(*(np.asarray(npz[f"{name}_{f}"]) for f in fields)) for name in SPLITS]
            skipped = [(str(f), str(r)) for f, r in npz["skipped"]]
            folders = (
                [str(f) for f in npz["folders"]] if "folders" in npz.files else [str(npz["folder"])]
            )
            extras = {key: np.asarray(npz[key]) for key in extra}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable run data ({err})") from err
    return StoredSplit(sets[0], sets[1], skipped, folders, extras)


def write_split_json(
    path: Path,
    train_names: np.ndarray,
    holdout_names: np.ndarray,
    skipped: list[tuple[str, str]],
    folders: list[str],
    **extra: Any,
) -> None:
    """``data.json``: the source folders, ``extra`` entries, the chain names of each split, the skipped
    files."""
    save_json_atomic(
        path,
        {
            "folders": list(folders),
            **extra,
            "train": np.asarray(train_names).tolist(),
            "holdout": np.asarray(holdout_names).tolist(),
            "skipped": [{"file": f, "reason": r} for f, r in skipped],
        },
    )
