"""Alphabet, FASTA and A2M/A3M readers, alignment filtering and sequence weights."""

from pathlib import Path

import numpy as np
import pytest

from protgen_jax.alphabet import AMINO_ACIDS, GAP, K_ALIGNED, MASK, PAD, decode, encode
from protgen_jax.data import (
    effective_sample_size,
    filter_alignment,
    read_alignment,
    read_fasta,
    sequence_weights,
    write_fasta,
)
from protgen_jax.errors import DataError

# ---------------------------------------------------------------- alphabet


def test_encode_decode_round_trip():
    tokens = encode(AMINO_ACIDS + "-")
    np.testing.assert_array_equal(tokens, np.arange(K_ALIGNED))
    assert tokens.dtype == np.int32
    assert decode(tokens) == AMINO_ACIDS + "-"
    np.testing.assert_array_equal(encode("AXBZJUO.-W"), [0] + [GAP] * 8 + [18])
    assert decode(encode("MKX.V")) == "MK--V"


def test_gap_mask_and_pad_are_distinct_tokens():
    assert len({GAP, MASK, PAD}) == 3 and min(GAP, MASK, PAD) == len(AMINO_ACIDS)
    assert decode(np.array([0, GAP, MASK, 1, PAD, PAD])) == "A-#C"


@pytest.mark.parametrize("seq", ["ACdE", "AC1E", "AC E", "ACÉ"])
def test_encode_rejects_unknown_characters(seq):
    with pytest.raises(DataError, match="position 2"):
        encode(seq)


def test_decode_rejects_out_of_range_tokens():
    for bad in (-1, 23):
        with pytest.raises(DataError, match=f"token position 1: {bad} is outside 0..22"):
            decode(np.array([0, bad]))


# ---------------------------------------------------------------- FASTA


def _write(tmp_path: Path, text: str | bytes, name: str = "x.fasta") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_read_fasta_strips_gaps_and_keeps_case(tmp_path):
    path = _write(tmp_path, "\n>s1 first one\nAC-DE\nfg.H\n\n>s2\nMK\n")
    assert read_fasta(path) == [("s1", "ACDEfgH"), ("s2", "MK")]
    assert read_fasta(path, uppercase=True) == [("s1", "ACDEFGH"), ("s2", "MK")]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "empty file"),
        ("  \n\n", "empty file"),
        ("ACDE\n>s\nAC\n", "line 1: expected a '>' header"),
        (b"\x00\x01\x02>s\nAC", "binary content"),
        (b">s\nAC\xff\xfe\n", "not a UTF-8 text file"),
        (">s1\nAC\n>s2\n>s3\nDE\n", "record 's2' \\(line 3\\) has no sequence"),
        (">s1\nAC\n>s2\n--..\n", "record 's2' \\(line 3\\) has no sequence"),
        (">s1\nAC\n>s2\nDE\nF7G\n", "record 's2' line 5 column 2: unexpected character '7'"),
        (">\nAC\n", "line 1: header '>' has no sequence id"),
        ("# STOCKHOLM 1.0\ns1 AC\n//\n", "Stockholm format is not supported"),
    ],
)
def test_read_fasta_errors(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_fasta(_write(tmp_path, text))
    assert "x.fasta" in str(info.value)


def test_read_fasta_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_fasta(tmp_path / "absent.fasta")


def test_write_fasta_round_trip_is_atomic(tmp_path):
    path = tmp_path / "out.fasta"
    path.write_text("old content\n")
    records = [("a desc", "ACDEFGHIK"), ("b", "MK")]
    write_fasta(path, records, line_width=4)
    assert path.read_text() == ">a desc\nACDE\nFGHI\nK\n>b\nMK\n"
    assert read_fasta(path) == [("a", "ACDEFGHIK"), ("b", "MK")]
    write_fasta(path, records)
    assert path.read_text() == ">a desc\nACDEFGHIK\n>b\nMK\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fasta"]


def test_write_fasta_bad_input_keeps_old_file(tmp_path):
    path = tmp_path / "out.fasta"
    path.write_text(">old\nAC\n")
    with pytest.raises(DataError, match="record 1"):
        write_fasta(path, [("a", "AC"), ("b\nc", "DE")])
    with pytest.raises(DataError, match="whitespace"):
        write_fasta(path, [("a", "A C")])
    with pytest.raises(DataError, match="does not exist"):
        write_fasta(tmp_path / "no" / "out.fasta", [("a", "AC")])
    assert path.read_text() == ">old\nAC\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fasta"]


def test_read_real_sequences(shared_data):
    records = read_fasta(shared_data / "sequences" / "family_domains_train.fasta")
    assert len(records) == 91_281
    assert records[0] == (
        "PF00013|FUBP2_HUMAN/426-491",
        "EMTFSIPTHKCGLVIGRGGENVKAINQQTGAFVEISRQLPPNGDPNFKLFIIRGSPQQIDHAKQLI",
    )
    assert min(len(seq) for _, seq in records) >= 20
    assert all(seq.isupper() for _, seq in records[:1000])


# ---------------------------------------------------------------- A2M / A3M

# Focus Q/10-21: 12 residues; "ab" (10, 11) and "k" (20) are focus insertions, so the 10 match columns
# hold residues 12-19 and 21, plus one focus gap column between 15 and 16.
A2M = """>Q/10-21 focus
abCDEF-GHIMkL
>s1
..CDEF-GHIM.L
>s2 an A3M-like row with its own insertions
CwwDEFAGHIML
>s3
CXEF-G
HIM.L
"""
FOCUS_POSITIONS = [12, 13, 14, 15, -1, 16, 17, 18, 19, 21]


def test_read_a2m(tmp_path):
    aln = read_alignment(_write(tmp_path, A2M, "q.a2m"))
    assert aln.ids == ["Q/10-21", "s1", "s2", "s3"]
    assert aln.focus_index == 0
    assert aln.focus_name == "Q"
    assert aln.focus_start == 10
    assert aln.focus_sequence == "CDEF-GHIML"
    np.testing.assert_array_equal(aln.column_positions, FOCUS_POSITIONS)
    assert aln.tokens.dtype == np.int32 and aln.column_positions.dtype == np.int32
    expected = [encode(s) for s in ("CDEF-GHIML", "CDEF-GHIML", "CDEFAGHIML", "CXEF-GHIML")]
    np.testing.assert_array_equal(aln.tokens, np.stack(expected))
    assert aln.tokens[3, 1] == GAP  # X counts as gap
    assert (aln.num_sequences, aln.num_columns) == (4, 10)


def test_focus_by_id_and_prefix(tmp_path):
    path = _write(tmp_path, A2M.replace(">s2 an", ">s2/5-16 an"), "q.a2m")
    by_id = read_alignment(path, focus="s2/5-16")
    by_prefix = read_alignment(path, focus="s2")
    for aln in (by_id, by_prefix):
        assert aln.focus_index == 2
        assert aln.focus_name == "s2"
        assert aln.focus_sequence == "CDEFAGHIML"
        # letters C w w D ... : C=5, w=6, w=7, D=8, ... L=16
        np.testing.assert_array_equal(aln.column_positions, [5, 8, 9, 10, 11, 12, 13, 14, 15, 16])
    no_range = read_alignment(path, focus="s1")
    np.testing.assert_array_equal(no_range.column_positions, [1, 2, 3, 4, -1, 5, 6, 7, 8, 9])
    with pytest.raises(DataError, match="focus sequence 'zz' not found"):
        read_alignment(path, focus="zz")


def test_aligned_fasta_with_comment_line(tmp_path):
    aln = read_alignment(_write(tmp_path, "#A3M# comment\n>a\nAC-D\n>b\nA--D\n", "x.fasta"))
    np.testing.assert_array_equal(aln.tokens, [encode("AC-D"), encode("A--D")])
    np.testing.assert_array_equal(aln.column_positions, [1, 2, -1, 3])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            ">a\nACD\n>b\nAC\n>c\nA\n",
            "record 'b' \\(line 3\\) has 2 match columns but the focus 'a' has 3",
        ),
        (">a\nACD\n>b\nA*D\n", "record 'b' line 4 column 2: unexpected character '\\*'"),
        (">a\nACD\n>b\nAC\nD1\n", "record 'b' line 5 column 2: unexpected character '1'"),
        (">a\nacd\n>b\nacd\n", "empty alignment.*'a' \\(line 1\\) has no match columns"),
        (">a/1-5\nACD\n", "focus 'a/1-5' \\(line 1\\) has 3 residues but its range 1-5 spans 5"),
        ("ACD\n", "not a FASTA/A2M/A3M file"),
        ("", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary content"),
        (">a\nACD\n>b\n", "record 'b' \\(line 3\\) has no sequence"),
    ],
)
def test_read_alignment_errors(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        read_alignment(_write(tmp_path, text, "bad.a2m"))
    assert "bad.a2m" in str(info.value)


def test_filter_alignment(tmp_path):
    # columns:       0 1 2 3 4 5     focus gap at column 4
    rows = [
        "ACDE-F",  # focus
        "ACD--F",
        "A-----",  # 4/5 gaps over non-focus-gap columns -> dropped at 0.5
        "ACDEGF",
        "--DE-F",  # 2/5 gaps -> kept
    ]
    text = "".join(f">r{i}\n{row}\n" for i, row in enumerate(rows))
    aln = read_alignment(_write(tmp_path, text, "f.a2m"))
    out = filter_alignment(aln)
    assert out.ids == ["r0", "r1", "r3", "r4"]
    # kept rows, columns 0-3 and 5: gap fractions 1/4, 1/4, 0, 1/4, 0 -> all <= 0.3
    assert out.focus_sequence == "ACDEF"
    np.testing.assert_array_equal(out.column_positions, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(out.tokens[2], encode("ACDEF"))
    strict = filter_alignment(aln, max_column_gap_fraction=0.2)
    assert strict.focus_sequence == "DF"  # columns with 1/4 gaps go at 0.2
    np.testing.assert_array_equal(strict.column_positions, [3, 5])
    keep_all = filter_alignment(
        aln,
        max_column_gap_fraction=1.0,
        drop_focus_gap_columns=False,
        max_sequence_gap_fraction=1.0,
    )
    np.testing.assert_array_equal(keep_all.tokens, aln.tokens)
    with pytest.raises(DataError, match="max_column_gap_fraction must lie in"):
        filter_alignment(aln, max_column_gap_fraction=1.5)


def test_filter_keeps_focus_even_if_gappy(tmp_path):
    aln = read_alignment(_write(tmp_path, ">f\nA--\n>b\nACD\n", "g.a2m"))
    out = filter_alignment(aln, drop_focus_gap_columns=False, max_column_gap_fraction=1.0)
    assert out.ids == ["f", "b"] and out.focus_index == 0


BLAT_INSERT_RESIDUES = [24, 25, 26, 27, 28, 56, 238, 284, 285, 286]


@pytest.fixture(scope="module")
def blat(shared_data):
    return read_alignment(shared_data / "blat_ecolx" / "BLAT_ECOLX.a2m")


def test_real_blat_alignment(blat, shared_data):
    assert blat.tokens.shape == (8403, 253)
    assert blat.focus_index == 0 and blat.focus_name == "BLAT_ECOLX" and blat.focus_start == 24
    assert set(range(24, 287)) - set(blat.column_positions.tolist()) == set(BLAT_INSERT_RESIDUES)
    ((_, wild_type),) = read_fasta(shared_data / "blat_ecolx" / "BLAT_ECOLX_wt.fasta")
    assert len(wild_type) == 263
    assert blat.focus_sequence == "".join(wild_type[p - 24] for p in blat.column_positions)


# ---------------------------------------------------------------- sequence weights


def reference_weights(tokens: np.ndarray, theta: float, exclude_gaps: bool) -> np.ndarray:
    """Direct O(N^2 L) NumPy reference: 1 / #{j : identity(i, j) > 1 - theta}."""
    same = tokens[:, None, :] == tokens[None, :, :]
    if exclude_gaps:
        same &= tokens[:, None, :] != GAP
        lengths = (tokens != GAP).sum(axis=1)
    else:
        lengths = np.full(tokens.shape[0], tokens.shape[1])
    identity = same.sum(axis=-1) / np.maximum(lengths, 1)[:, None]
    counts = (identity > 1 - theta).sum(axis=1)
    return np.where(lengths > 0, 1.0 / np.maximum(counts, 1), 0.0)


TINY = np.stack([encode(s) for s in ("ACDEF", "ACDEF", "ACDEG", "-----", "AC---")])


@pytest.mark.parametrize(
    ("theta", "exclude_gaps", "expected"),
    [
        # ACDEG is exactly 80% identical to ACDEF: not a neighbour at theta 0.2 (strict ">").
        # AC--- is 100% identical to the first three over its own 2 residues; they are 40% to it.
        (0.2, True, [1 / 2, 1 / 2, 1, 0, 1 / 4]),
        (0.25, True, [1 / 3, 1 / 3, 1 / 3, 0, 1 / 4]),
        # gap as a letter: ----- and AC--- share 3 of 5 columns
        (0.2, False, [1 / 2, 1 / 2, 1, 1, 1]),
        (0.5, False, [1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2]),
    ],
)
def test_weights_tiny_exact(theta, exclude_gaps, expected):
    weights = sequence_weights(TINY, theta=theta, exclude_gaps=exclude_gaps)
    assert weights.dtype == np.float32 and weights.shape == (5,)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    np.testing.assert_allclose(weights, reference_weights(TINY, theta, exclude_gaps), rtol=1e-6)
    assert effective_sample_size(weights) == pytest.approx(sum(expected))


def _clustered_tokens(seed: int, n: int = 37, length: int = 30) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ancestors = rng.integers(0, 20, size=(4, length))
    tokens = ancestors[rng.integers(0, 4, size=n)]
    mutate = rng.random((n, length)) < 0.08
    tokens = np.where(mutate, rng.integers(0, 21, size=(n, length)), tokens)
    tokens[rng.random((n, length)) < 0.05] = GAP
    return tokens.astype(np.int32)


@pytest.mark.parametrize("exclude_gaps", [True, False])
def test_blocked_weights_equal_reference(exclude_gaps):
    tokens = _clustered_tokens(0)
    for theta in (0.2, 0.3):
        reference = reference_weights(tokens, theta, exclude_gaps)
        assert 1 < (1 / reference).max() < len(tokens)  # non-trivial neighbourhoods
        unblocked = sequence_weights(
            tokens, theta=theta, block_size=len(tokens), exclude_gaps=exclude_gaps
        )
        np.testing.assert_allclose(unblocked, reference, rtol=1e-6)
        for block_size in (5, 16):
            blocked = sequence_weights(
                tokens, theta=theta, block_size=block_size, exclude_gaps=exclude_gaps
            )
            np.testing.assert_array_equal(blocked, unblocked)


def test_weights_bad_arguments():
    with pytest.raises(DataError, match="theta"):
        sequence_weights(TINY, theta=0.0)
    with pytest.raises(DataError, match="tokens must lie"):
        sequence_weights(TINY + 1)
    assert sequence_weights(np.zeros((0, 4), np.int32)).shape == (0,)


def test_real_blat_neff(blat):
    filtered = filter_alignment(blat)
    assert filtered.tokens.shape == (8403, 253)  # this alignment is already filtered upstream
    neff = effective_sample_size(sequence_weights(filtered.tokens, theta=0.2))
    assert 2000 <= neff <= 3300  # PROVENANCE: about 2,600
    # The direct NumPy computation of the same rule (one [N, N] float64 matrix) gives 2606.41.
    assert neff == pytest.approx(2606.41, abs=0.05)
