"""DMS tables: reading scores, parsing mutants, mapping them onto alignment columns."""

import re
from pathlib import Path

import numpy as np
import pytest

from protgen_jax.alphabet import AMINO_ACIDS, encode
from protgen_jax.data import (
    map_mutants,
    mutant_tokens,
    parse_mutant,
    read_alignment,
    read_dms,
)
from protgen_jax.errors import DataError

# Focus P/5-12: residues 5..12 = "mKLVwEGH"; m (5) and w (9) are insertions -> columns 6,7,8,10,11,12.
A2M = ">P/5-12\nmKLVwEGH\n>a\n.KLI.EGH\n>b\nKLVdE-H\n"


@pytest.fixture()
def aln(tmp_path: Path):
    path = tmp_path / "p.a2m"
    path.write_text(A2M)
    return read_alignment(path)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dms.csv"
    path.write_text(text)
    return path


def test_parse_mutant():
    assert parse_mutant("H24A") == [("H", 24, "A")]
    assert parse_mutant("H24A:G50D") == [("H", 24, "A"), ("G", 50, "D")]
    assert parse_mutant("W286*") == [("W", 286, "*")]


@pytest.mark.parametrize("bad", ["H24", "24A", "h24A", "H24AB", "H24A:", "H24A;G50D", "H24A:G24D"])
def test_parse_mutant_errors(bad):
    with pytest.raises(DataError, match=re.escape(repr(bad))):
        parse_mutant(bad)


def test_read_dms(tmp_path):
    path = _csv(tmp_path, "mutant,score,other\nK6A,0.5,x\n\nL7D:V8E,-1.25e-1,y\n")
    mutants, scores = read_dms(path, "score")
    assert mutants == ["K6A", "L7D:V8E"]
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, [0.5, -0.125])


def test_read_dms_errors(tmp_path):
    path = _csv(tmp_path, "mutant,score,other\nK6A,0.5,x\nL7D,abc,y\nV8E,,z\n")
    with pytest.raises(
        DataError, match="no column 'fitness'; available columns: mutant, score, other"
    ):
        read_dms(path, "fitness")
    with pytest.raises(DataError, match=r"dms.csv: line 3 \(L7D\): 'score' value 'abc' is not a"):
        read_dms(path, "score")
    with pytest.raises(DataError, match="no column 'variant'"):
        read_dms(path, "score", mutant_column="variant")
    with pytest.raises(DataError, match="line 3 has 2 fields but the header has 3"):
        read_dms(_csv(tmp_path, "mutant,score,other\nK6A,0.5,x\nL7D,1\n"), "score")
    with pytest.raises(DataError, match="empty file"):
        read_dms(_csv(tmp_path, ""), "score")
    with pytest.raises(DataError, match="no such file"):
        read_dms(tmp_path / "absent.csv", "score")


def test_read_dms_skip_missing(tmp_path):
    path = _csv(tmp_path, "mutant,score\nK6A,0.5\nL7D,\nV8E,nan\nE10D,2\n")
    with pytest.raises(DataError, match=r"line 3 \(L7D\): 'score' value '' is not"):
        read_dms(path, "score")
    mutants, scores = read_dms(path, "score", skip_missing=True)
    assert mutants == ["K6A", "E10D"]
    np.testing.assert_array_equal(scores, [0.5, 2.0])
    # skip_missing tolerates empty / NaN cells, not text
    bad = _csv(tmp_path, "mutant,score\nK6A,oops\n")
    with pytest.raises(DataError, match="'oops' is not"):
        read_dms(bad, "score", skip_missing=True)


def test_map_mutants(aln):
    np.testing.assert_array_equal(aln.column_positions, [6, 7, 8, 10, 11, 12])
    mutants = ["K6A", "L7D:H12W", "M5A", "W9Y", "V8*", "H12H", "E10D:G11C:K6Y", "K6A:P30G"]
    mapping = map_mutants(mutants, aln)
    assert mapping.column_idx.shape == mapping.mt_token.shape == (8, 3)
    np.testing.assert_array_equal(mapping.kept, [1, 1, 0, 0, 0, 1, 1, 0])
    assert mapping.skip_reasons[0] == ""
    assert mapping.skip_reasons[2] == "position 5 is not a match column"
    assert mapping.skip_reasons[3] == "position 9 is not a match column"
    assert "'*' is not one of the 20 amino acids" in mapping.skip_reasons[4]
    assert mapping.skip_reasons[7] == "position 30 is not a match column"
    np.testing.assert_array_equal(mapping.column_idx[1], [1, 5, 1])  # padded with its first entry
    np.testing.assert_array_equal(mapping.mt_token[6], encode("DCY"))
    assert mapping.column_idx.dtype == mapping.mt_token.dtype == np.int32

    sequences = mutant_tokens(aln, mapping)
    focus = aln.focus_tokens
    expected = [
        "ALVEGH",
        "KDVEGW",
        "KLVEGH",
        "KLVEGH",
        "KLVEGH",
        "KLVEGH",
        "YLVDCH",
        "KLVEGH",
    ]
    np.testing.assert_array_equal(sequences, np.stack([encode(s) for s in expected]))
    np.testing.assert_array_equal(sequences[~mapping.kept], np.tile(focus, (4, 1)))


def test_map_mutants_wild_type_mismatch_lists_offenders(aln):
    wrong = [f"{AMINO_ACIDS[(AMINO_ACIDS.index('L') + k) % 20]}7A" for k in range(1, 13)]
    with pytest.raises(DataError) as info:
        map_mutants(["K6A", *wrong], aln)
    message = str(info.value)
    assert message.startswith("12 mutants name a wild-type letter that differs from the focus 'P'")
    assert "M7A (focus has 'L' at 7)" in message
    assert message.count("(focus has") == 10
    assert message.endswith(" ...")


def test_real_blat_mutants(shared_data):
    folder = shared_data / "blat_ecolx"
    mutants, scores = read_dms(folder / "BLAT_ECOLX_Stiffler2015_dms.csv", "2500")
    assert len(mutants) == len(scores) == 4997
    assert mutants[0] == "H24A" and scores[0] == pytest.approx(-0.009783565)
    aln = read_alignment(folder / "BLAT_ECOLX.a2m")
    mapping = map_mutants(mutants, aln)
    assert int(mapping.kept.sum()) == 4807
    skipped = {int(m[1:-1]) for m, kept in zip(mutants, mapping.kept, strict=True) if not kept}
    assert skipped == {24, 25, 26, 27, 28, 56, 238, 284, 285, 286}
    sequences = mutant_tokens(aln, mapping)
    changed = (sequences != aln.focus_tokens).sum(axis=1)
    assert set(changed[mapping.kept].tolist()) == {1}


# ------------------------------------------------------------------ bad files
@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03mutant", "is a gzip-compressed file, not a CSV"),
        (b"PK\x03\x04\x14\x00", "is a zip file, not a CSV"),
        (bytes(range(128, 256)) * 4, r"line 1: binary data \(byte 0x80\), not a UTF-8 CSV"),
        (b"mutant,score\nK6A,1\x00\n", r"line 2: binary data \(byte 0x00\)"),
        (b"mutant,score\n" + b"K6A,1\n" * 3000 + b"L7D,\xff\n", "line 3002: binary data"),
        (b"", r"empty file \(no header row\)"),
        (b"\n\n", r"empty file \(no header row\)"),
        (b"mutant,score\n", "no data rows"),
        (b"variant,score\nK6A,1\n", "no column 'mutant'; available columns: variant, score"),
        (b"mutant,fitness\nK6A,1\n", "no column 'score'; available columns: mutant, fitness"),
        (b"mutant,score,score\nK6A,1,2\n", "line 1: column 'score' appears more than once"),
        (b"mutant,score\nK6A,high\n", r"line 2 \(K6A\): 'score' value 'high' is not a finite"),
        (b"mutant,score\nK6A,1\nL7D,1,2\n", "line 3 has 3 fields but the header has 2"),
        (b"mutant,score\n,1\n", "line 2: empty 'mutant' cell"),
    ],
    ids=[
        "gzip", "zip", "high-bytes", "nul", "late-bad-byte", "empty", "blank", "header-only",
        "no-mutant-column", "no-score-column", "duplicate-column", "text-score", "ragged", "no-mutant",
    ],
)  # fmt: skip
def test_read_dms_bad_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "dms.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message) as info:
        read_dms(path, "score")
    assert "\n" not in str(info.value)


def test_read_dms_keep_missing(tmp_path):
    path = _csv(tmp_path, "mutant,score\nK6A,0.5\nL7D,\nV8E,nan\nE10D,2\n")
    mutants, scores = read_dms(path, "score", keep_missing=True)
    assert mutants == ["K6A", "L7D", "V8E", "E10D"]
    np.testing.assert_array_equal(np.isnan(scores), [False, True, True, False])
    with pytest.raises(DataError, match="'oops' is not"):
        read_dms(_csv(tmp_path, "mutant,score\nK6A,oops\n"), "score", keep_missing=True)


def test_prepare_dms_counts_every_skipped_mutant(aln, tmp_path):
    """Unmappable mutants and rows without a score are counted by reason, and the warning names them."""
    from protgen_jax.recipes.vae import prepare_dms

    path = _csv(
        tmp_path,
        "mutant,score\nK6A,0.5\nM5A,1\nW9Y,2\nV8*,3\nE10D,\nL7D,nan\nK6A:P30G,4\nH12W,1\n",
    )
    dms = prepare_dms(aln, path, "score")
    assert dms.mutants == ["K6A", "H12W"] and dms.n_total == 8 and dms.n_skipped == 6
    assert dms.skip_reasons == {
        "position 5 is not a match column": 1,
        "position 9 is not a match column": 1,
        "mutant letter '*' is not one of the 20 amino acids": 1,
        "position 30 is not a match column": 1,
        "missing fitness value": 2,
    }
    warning = dms.skipped_warning(path)
    assert "\n" not in warning
    assert warning.startswith(f"warning: {path}: 6 of 8 mutants skipped (not scored): ")
    assert "missing fitness value (2)" in warning and warning.endswith("and 2 more reasons")

    every = prepare_dms(aln, _csv(tmp_path, "mutant,score\nK6A,0.5\nH12W,1\n"), "score")
    assert every.n_skipped == 0 and every.skipped_warning(path) is None
    with pytest.raises(DataError, match="no mutant of column 'score' falls on the alignment"):
        prepare_dms(aln, _csv(tmp_path, "mutant,score\nM5A,1\nW9Y,2\n"), "score")
    with pytest.raises(DataError, match="column 'score' has no fitness value on a mappable"):
        prepare_dms(aln, _csv(tmp_path, "mutant,score\nK6A,\nM5A,1\n"), "score")


def test_score_command_warns_about_skipped_mutants(tmp_path, capsys):
    """``protgen score`` on a DMS file with unmappable mutants prints one warning line on stderr
    naming how many were skipped and why (they are also counted in the report)."""
    import json

    from protgen_jax.config import apply_overrides
    from protgen_jax.recipes.vae import RECIPE, VAEConfig

    rng = np.random.default_rng(0)
    focus = "MKLVAEGHIRSTW"
    rows = [f">F/1-{len(focus)}\n{focus}\n"]
    for i in range(24):
        seq = "".join(c if rng.random() > 0.3 else AMINO_ACIDS[rng.integers(20)] for c in focus)
        rows.append(f">s{i}\n{seq}\n")
    a2m = tmp_path / "tiny.a2m"
    a2m.write_text("".join(rows))
    config = apply_overrides(
        VAEConfig(),
        [f"data={a2m}", "steps=1", "encoder_widths=8", "decoder_widths=8,8", "latent_dim=2",
         "dictionary_size=4", "batch_size=8", "eval_every=0", "devices=1", "steps_per_call=1"],
    )  # fmt: skip
    RECIPE.train(config, tmp_path / "run", progress=False)
    dms = _csv(tmp_path, "mutant,score\nK2A,0.5\nL3D,1\nV4E,0.2\nK2*,1\nE6D:P40G,2\n")
    capsys.readouterr()
    opts = {
        "out": tmp_path / "score.json",
        "dms": str(dms),
        "column": "score",
        "samples": 1,
        "estimator": "elbo",
    }
    RECIPE.run_command("score", [tmp_path / "run"], {**opts, "quiet": True})
    report = json.loads((tmp_path / "score.json").read_text())
    assert report["n_used"] == 3 and report["n_skipped"] == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert lines == [
        f"warning: {dms}: 2 of 5 mutants skipped (not scored): mutant letter '*' is not one of the "
        "20 amino acids (1), position 40 is not a match column (1)"
    ]
