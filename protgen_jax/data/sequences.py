"""Unaligned protein sequences for sequence diffusion: reading, family labels, split, cropping, buckets.

Tokens are those of ``protgen_jax.alphabet``: 0..19 = "ACDEFGHIKLMNPQRSTVWY", MASK = 21 at positions to fill,
PAD = 22 after a sequence's end (GAP = 20 never occurs: gaps are removed).

Letter rule (applied to every record, training or evaluation):

- the gap characters ``-`` and ``.`` are removed (an aligned FASTA or A2M file reads as raw sequences);
- lower case is upper-cased (A2M insert states are residues too);
- ``U`` (selenocysteine) reads as ``C`` and ``O`` (pyrrolysine) as ``K``, their standard analogues;
- a single trailing ``*`` (stop) is dropped;
- a record holding an ambiguous letter ``X``, ``B``, ``Z`` or ``J`` is skipped and counted
  (``ambiguous="skip"``, the default; 217 of the 91,281 shared domain sequences) or rejected
  (``ambiguous="error"``); any other character is a ``DataError`` naming the file, record, line and column.

Family labels come from the header's first word ``FAMILY|id``; a header without ``|`` has no family.

Split: a record is held out (validation) when the first 8 bytes of ``sha256(SALT + header word)`` read
as a fraction below ``holdout_fraction`` (5% by default). The rule depends on the record alone, not on
the file order or on the other records, so it holds out whole sequences of every training family and
gives the same split for any subset or reordering of the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protgen_jax import alphabet as vocab
from protgen_jax.atomic import save_npz_atomic
from protgen_jax.data.fasta import FastaRecord, read_records, write_fasta
from protgen_jax.errors import DataError

__all__ = [
    "AMBIGUOUS",
    "FILL_CHAR",
    "SPLIT_SALT",
    "BucketBatcher",
    "InpaintRecord",
    "SequenceSet",
    "bucket_index",
    "chunk_sequence",
    "concatenate",
    "crop_window",
    "drop_near_copies",
    "family_of",
    "holdout_mask",
    "load_sequence_set",
    "pad_batch",
    "read_inpaint_fasta",
    "read_sequences",
    "save_sequence_set",
    "split_families",
]

AMBIGUOUS = "XBZJ"
FILL_CHAR = vocab.MASK_CHAR
SPLIT_SALT = "protgen-seqdiff-split-v1:"

_GAP, _AMBIG, _STOP, _FILL, _BAD = -1, -2, -3, -4, -5


def _lookup_table() -> np.ndarray:
    """ASCII byte -> token code (>= 0) or one of the negative markers above."""
    table = np.full(256, _BAD, np.int16)
    for index, letter in enumerate(vocab.AMINO_ACIDS):
        table[ord(letter)] = table[ord(letter.lower())] = index
    for rare, standard in (("U", "C"), ("O", "K")):
        table[ord(rare)] = table[ord(rare.lower())] = vocab.AMINO_ACIDS.index(standard)
    for letter in AMBIGUOUS:
        table[ord(letter)] = table[ord(letter.lower())] = _AMBIG
    table[ord("-")] = table[ord(".")] = _GAP
    table[ord("*")] = _STOP
    table[ord(FILL_CHAR)] = _FILL
    return table


_TABLE = _lookup_table()


def family_of(header_word: str) -> str:
    """The family of a ``FAMILY|id`` header word ("" when there is no ``|``)."""
    return header_word.split("|", 1)[0] if "|" in header_word else ""


def _codes(path: Path, record: FastaRecord, allow_fill: bool) -> np.ndarray:
    """Record -> codes with gaps removed and a trailing stop dropped; DataError on a bad character."""
    try:
        raw = np.frombuffer(record.sequence.encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        position = next(i for i, c in enumerate(record.sequence) if ord(c) > 127)
        raw = None
    else:
        codes = _TABLE[raw]
        bad = (codes == _BAD) | ((codes == _FILL) & (not allow_fill))
        stops = np.flatnonzero(codes == _STOP)
        if len(stops) and stops[-1] == len(codes) - 1:
            bad[stops[:-1]] = True
            codes = codes[:-1]
            bad = bad[:-1]
        else:
            bad |= codes == _STOP
        position = int(np.argmax(bad)) if bad.any() else -1
    if raw is None or position >= 0:
        line, column = record.locate(position)
        raise DataError(
            f"{path}: record {record.id!r} line {line} column {column}: unexpected character "
            f"{record.sequence[position]!r}"
        )
    codes = codes[codes != _GAP]
    if codes.size == 0:
        raise DataError(f"{path}: record {record.id!r} (line {record.line}) has no sequence")
    return codes


@dataclass(frozen=True)
class SequenceSet:
    """Variable-length token sequences stored flat.

    Attributes:
      ids: header first words (``FAMILY|id``), ``N`` of them.
      family_names: the label vocabulary (label k is ``family_names[k]``).
      labels: ``[N]`` int32 family label, -1 where the family is not in ``family_names`` or absent.
      tokens: ``[sum of lengths]`` int8 tokens 0..19, the sequences concatenated.
      offsets: ``[N + 1]`` int64, sequence i is ``tokens[offsets[i]:offsets[i + 1]]``.
      num_skipped: records skipped for an ambiguous letter when reading.
    """

    ids: tuple[str, ...]
    family_names: tuple[str, ...]
    labels: np.ndarray
    tokens: np.ndarray
    offsets: np.ndarray
    num_skipped: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` int64 sequence lengths."""
        return np.diff(self.offsets)

    def sequence(self, index: int) -> np.ndarray:
        """Tokens ``[L_i]`` int32 of sequence ``index``."""
        return self.tokens[self.offsets[index] : self.offsets[index + 1]].astype(np.int32)

    def subset(self, indices: np.ndarray) -> SequenceSet:
        """The sequences at ``indices`` (in that order), same family vocabulary."""
        indices = np.asarray(indices, np.int64)
        pieces = [self.tokens[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        lengths = np.array([len(p) for p in pieces], np.int64)
        return SequenceSet(
            ids=tuple(self.ids[i] for i in indices),
            family_names=self.family_names,
            labels=self.labels[indices].astype(np.int32),
            tokens=np.concatenate(pieces) if pieces else np.zeros(0, np.int8),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            num_skipped=0,
        )


def concatenate(first: SequenceSet, second: SequenceSet) -> SequenceSet:
    """``first`` then ``second`` (the vocabulary of ``first``; ``second``'s labels as they are)."""
    return SequenceSet(
        ids=first.ids + second.ids,
        family_names=first.family_names,
        labels=np.r_[first.labels, second.labels].astype(np.int32),
        tokens=np.r_[first.tokens, second.tokens],
        offsets=np.r_[first.offsets, first.offsets[-1] + second.offsets[1:]].astype(np.int64),
    )


def split_families(data: SequenceSet, names: tuple[str, ...]) -> tuple[SequenceSet, SequenceSet]:
    """``(kept, removed)``: the sequences of the families ``names`` move to ``removed``, and ``kept``
    gets the vocabulary without them (``read_sequences`` of a file holding only the kept records gives
    the same set). ``removed`` keeps the full vocabulary.

    Raises:
      DataError: a name that is not a family of ``data``.
    """
    missing = [n for n in names if n not in data.family_names]
    if missing:
        raise DataError(
            f"{missing[0]!r} is not a family of the data ({len(data.family_names)} families)"
        )
    gone = np.isin(data.labels, [data.family_names.index(n) for n in names])
    kept = data.subset(np.flatnonzero(~gone))
    vocabulary = tuple(f for f in data.family_names if f not in names)
    old_names = [data.family_names[k] if k >= 0 else "" for k in kept.labels]
    kept = dataclasses.replace(
        kept, family_names=vocabulary, labels=_relabel(old_names, vocabulary),
        num_skipped=data.num_skipped,
    )  # fmt: skip
    return kept, data.subset(np.flatnonzero(gone))


def leave_families_out(
    data: SequenceSet, names: tuple[str, ...], path: str | Path
) -> tuple[SequenceSet, SequenceSet | None]:
    """The ``unseen_families`` rule of the recipes: ``(training set, left-out set)`` by
    :func:`split_families`, or ``(data, None)`` when ``names`` is empty.

    Raises:
      DataError: naming ``path`` (the FASTA read) and a name that is not one of its families.
    """
    if not names:
        return data, None
    try:
        return split_families(data, tuple(names))
    except DataError as err:
        raise DataError(f"{path}: unseen_families: {err}") from None


def _kmers(sequence: np.ndarray, k: int) -> set[bytes]:
    raw = sequence.astype(np.int8).tobytes()
    return {raw[i : i + k] for i in range(len(raw) - k + 1)}


def drop_near_copies(
    data: SequenceSet, reference: SequenceSet, max_overlap: float, k: int = 6
) -> tuple[SequenceSet, int]:
    """``(kept, number dropped)``: the sequences of ``data`` of which at most ``max_overlap`` of the
    distinct ``k``-mers occur anywhere in ``reference`` (``|kmers(x) & kmers(reference)| <=
    max_overlap |kmers(x)|``); a sequence shorter than ``k`` is kept. Keeps the order of ``data``.
    With ``max_overlap = 0.1`` and ``k = 6`` this removes copies and close homologs of the reference
    (two random 6-mers agree with chance 20**-6), not remote ones."""
    seen: set[bytes] = set()
    for i in range(len(reference)):
        seen |= _kmers(reference.sequence(i), k)
    keep = []
    for i in range(len(data)):
        own = _kmers(data.sequence(i), k)
        keep.append(len(own & seen) <= max_overlap * len(own))
    keep = np.asarray(keep, bool)
    return data.subset(np.flatnonzero(keep)), int((~keep).sum())


def write_sequence_set(path: str | Path, data: SequenceSet) -> None:
    """``data`` as FASTA (headers = its ids, so ``FAMILY|id`` survives), atomically: a run's
    ``unseen.fasta``, read back by ``read_sequences`` as the same records."""
    records = [(name, vocab.decode(data.sequence(k))) for k, name in enumerate(data.ids)]
    write_fasta(path, records)


def _relabel(families: list[str], family_names: tuple[str, ...]) -> np.ndarray:
    index = {name: k for k, name in enumerate(family_names)}
    return np.array([index.get(f, -1) for f in families], np.int32)


def read_sequences(
    path: str | Path,
    family_names: tuple[str, ...] | None = None,
    ambiguous: str = "skip",
) -> SequenceSet:
    """Read an unaligned (or aligned / A2M) protein FASTA file under the module's letter rule.

    Args:
      path: the FASTA file.
      family_names: the label vocabulary; None = the sorted families found in the file.
      ambiguous: "skip" (drop records with X/B/Z/J, counted in ``num_skipped``) or "error".

    Returns:
      A :class:`SequenceSet` of the kept records, in file order.

    Raises:
      DataError: missing / empty / non-FASTA file, a record with no sequence, a bad character, an
        ambiguous letter with ``ambiguous="error"``, or no record left.
    """
    if ambiguous not in ("skip", "error"):
        raise ValueError(f"ambiguous must be 'skip' or 'error', got {ambiguous!r}")
    path = Path(path)
    ids, families, pieces, skipped = [], [], [], 0
    for record in read_records(path):
        codes = _codes(path, record, allow_fill=False)
        if np.any(codes == _AMBIG):
            if ambiguous == "error":
                raise DataError(
                    f"{path}: record {record.id!r} (line {record.line}) holds an ambiguous letter "
                    f"({'/'.join(AMBIGUOUS)})"
                )
            skipped += 1
            continue
        ids.append(record.id)
        families.append(family_of(record.id))
        pieces.append(codes.astype(np.int8))
    if not pieces:
        raise DataError(f"{path}: no usable sequence ({skipped} skipped for ambiguous letters)")
    if family_names is None:
        family_names = tuple(sorted({f for f in families if f}))
    lengths = np.array([len(p) for p in pieces], np.int64)
    return SequenceSet(
        ids=tuple(ids),
        family_names=tuple(family_names),
        labels=_relabel(families, tuple(family_names)),
        tokens=np.concatenate(pieces),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        num_skipped=skipped,
    )


def save_sequence_set(path: str | Path, data: SequenceSet, **extra: np.ndarray) -> None:
    """Write ``data`` (and named arrays: a ``[N]`` split, a count) to a compressed ``.npz``, atomically."""
    path = Path(path)
    save_npz_atomic(
        path, tokens=data.tokens, offsets=data.offsets, labels=data.labels, ids=np.asarray(data.ids),
        family_names=np.asarray(data.family_names, dtype=str), num_skipped=data.num_skipped,
        **{f"extra_{k}": v for k, v in extra.items()},
    )  # fmt: skip


def load_sequence_set(path: str | Path) -> tuple[SequenceSet, dict[str, np.ndarray]]:
    """Inverse of :func:`save_sequence_set`: ``(data, extra arrays by name)``."""
    try:
        z = np.load(Path(path), allow_pickle=False)
        data = SequenceSet(
            ids=tuple(str(i) for i in z["ids"]),
            family_names=tuple(str(f) for f in z["family_names"]),
            labels=z["labels"],
            tokens=z["tokens"],
            offsets=z["offsets"],
            num_skipped=int(z["num_skipped"]),
        )
        extra = {k[len("extra_") :]: z[k] for k in z.files if k.startswith("extra_")}
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: unreadable sequence set ({err})") from err
    return data, extra


def holdout_mask(ids: tuple[str, ...] | list[str], fraction: float) -> np.ndarray:
    """``[N]`` bool, True for held-out records: ``int(sha256(SALT + id)[:8]) / 2**64 < fraction``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1), got {fraction}")
    scale = float(2**64)
    values = [
        int.from_bytes(hashlib.sha256((SPLIT_SALT + i).encode()).digest()[:8], "big") / scale
        for i in ids
    ]
    return np.asarray(values) < fraction


def crop_window(sequence: np.ndarray, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed window of ``max_len`` residues (the sequence itself when not longer)."""
    if len(sequence) <= max_len:
        return sequence
    start = int(rng.integers(0, len(sequence) - max_len + 1))
    return sequence[start : start + max_len]


def chunk_sequence(sequence: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Split into ``ceil(L / max_len)`` consecutive pieces of near-equal length (each <= max_len)."""
    pieces = -(-len(sequence) // max_len)
    return [p for p in np.array_split(sequence, max(pieces, 1)) if len(p)]


def bucket_index(lengths: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """Index of the smallest bucket length >= each length ``[N]`` (buckets sorted ascending)."""
    edges = np.asarray(buckets)
    if np.any(np.diff(edges) <= 0):
        raise ValueError(f"buckets must be strictly increasing, got {buckets}")
    index = np.searchsorted(edges, np.asarray(lengths), side="left")
    if np.any(index >= len(edges)):
        raise ValueError(f"a length exceeds the largest bucket {edges[-1]}")
    return index


def pad_batch(sequences: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences into ``tokens [B, length]`` int32 (PAD after each end) and ``mask [B, length]``."""
    out = np.full((len(sequences), length), vocab.PAD, np.int32)
    mask = np.zeros((len(sequences), length), bool)
    for row, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"sequence of length {len(seq)} does not fit in {length}")
        out[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return out, mask


class BucketBatcher:
    """Deterministic length-bucketed minibatches: ``batch(step)`` depends on (seed, step) only.

    Each sequence (cropped to ``max_len = buckets[-1]`` by a random window drawn per use) falls in the
    smallest bucket that holds it; bucket b has batch size ``B_b = max(1, tokens_per_batch // L_b)`` and
    is drawn with probability proportional to ``n_b / B_b``, so every sequence is equally likely to
    appear in a step whatever its length. Returns ``tokens [B_b, L_b]`` int32 (PAD-padded), ``mask``
    ``[B_b, L_b]`` bool and ``labels [B_b]`` int32 (-1 = no family).
    """

    def __init__(
        self, data: SequenceSet, buckets: tuple[int, ...], tokens_per_batch: int, seed: int
    ):
        if len(data) == 0:
            raise DataError("no sequences to batch")
        self.data, self.buckets, self.seed = data, tuple(buckets), seed
        clipped = np.minimum(data.lengths, self.buckets[-1])
        which = bucket_index(clipped, self.buckets)
        self.members = [np.flatnonzero(which == b) for b in range(len(self.buckets))]
        self.batch_sizes = [max(1, tokens_per_batch // length) for length in self.buckets]
        weights = np.array(
            [len(m) / bs for m, bs in zip(self.members, self.batch_sizes, strict=True)]
        )
        self.bucket_probs = weights / weights.sum()

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The minibatch of training step ``step``: (tokens, mask, labels)."""
        rng = np.random.default_rng([self.seed, step])
        b = int(rng.choice(len(self.buckets), p=self.bucket_probs))
        rows = rng.choice(self.members[b], size=self.batch_sizes[b], replace=True)
        seqs = [crop_window(self.data.sequence(r), self.buckets[-1], rng) for r in rows]
        tokens, mask = pad_batch(seqs, self.buckets[b])
        return tokens, mask, self.data.labels[rows].astype(np.int32)


@dataclass(frozen=True)
class InpaintRecord:
    """A template to fill: ``tokens [L]`` int32 (MASK at the positions to fill), ``fill [L]`` bool."""

    id: str
    label: int
    tokens: np.ndarray
    fill: np.ndarray


def read_inpaint_fasta(path: str | Path, family_names: tuple[str, ...]) -> list[InpaintRecord]:
    """Read inpainting templates: ``#`` marks each residue to fill, letters are kept.

    The letter rule of this module applies (gaps removed, lower case upper-cased, U -> C, O -> K), except
    that an ambiguous letter (X/B/Z/J) is an error: mark such positions with ``#`` instead. The family
    label comes from a ``FAMILY|id`` header (-1 when unknown to the model).

    Raises:
      DataError: as :func:`read_sequences`, plus an ambiguous letter or a template with nothing to fill.
    """
    path = Path(path)
    out = []
    for record in read_records(path):
        codes = _codes(path, record, allow_fill=True)
        if np.any(codes == _AMBIG):
            raise DataError(
                f"{path}: record {record.id!r} holds an ambiguous letter; mark positions to fill "
                f"with {FILL_CHAR!r}"
            )
        fill = codes == _FILL
        if not fill.any():
            raise DataError(
                f"{path}: record {record.id!r} has no {FILL_CHAR!r} position to fill; mark the "
                f"residues to generate with {FILL_CHAR!r}"
            )
        tokens = np.where(fill, vocab.MASK, codes).astype(np.int32)
        label = int(_relabel([family_of(record.id)], tuple(family_names))[0])
        out.append(InpaintRecord(record.id, label, tokens, fill))
    return out
