"""Tests for protgen_jax.data.sequences: letter rule, family labels, errors, split, crops and buckets."""

from pathlib import Path

import numpy as np
import pytest

from protgen_jax import alphabet as vocab
from protgen_jax.data import sequences as sq
from protgen_jax.errors import DataError


def _write(tmp_path: Path, text: str, name: str = "x.fasta") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_letter_rule_and_family_labels(tmp_path):
    path = _write(
        tmp_path,
        ">FAM1|a desc\nAC-D.e\nfu\n>FAM2|b\nOKW*\n>FAM1|c\nAXA\n>plain\nMMM\n>FAM2|d\nbzq\n",
    )
    data = sq.read_sequences(path)
    assert data.ids == ("FAM1|a", "FAM2|b", "plain")
    assert data.family_names == ("FAM1", "FAM2")
    np.testing.assert_array_equal(data.labels, [0, 1, -1])
    assert vocab.decode(data.sequence(0)) == "ACDEFC"  # gaps removed, lower -> upper, U -> C
    assert vocab.decode(data.sequence(1)) == "KKW"  # O -> K, trailing stop dropped
    assert vocab.decode(data.sequence(2)) == "MMM"
    assert data.num_skipped == 2  # AXA and bzq hold ambiguous letters
    np.testing.assert_array_equal(data.lengths, [6, 3, 3])
    assert data.sequence(0).dtype == np.int32

    named = sq.read_sequences(path, family_names=("FAM2",))
    np.testing.assert_array_equal(named.labels, [-1, 0, -1])
    with pytest.raises(DataError, match="ambiguous"):
        sq.read_sequences(path, ambiguous="error")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("   \n\n", "empty file"),
        ("hello world\nACDE\n", "not a FASTA"),
        (">a\n>b\nACD\n", "'a'.*has no sequence"),
        (">a\n--..\n", "has no sequence"),
        (">a\nACD\nAC1D\n", "line 3 column 3.*'1'"),
        (">a\nAC*D\n", "unexpected character '\\*'"),
        (">a\nAC#D\n", "unexpected character '#'"),
        (">a\nXXXX\n", "no usable sequence"),
    ],
)
def test_bad_files_raise_data_error(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        sq.read_sequences(_write(tmp_path, text))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        sq.read_sequences(tmp_path / "absent.fasta")
    with pytest.raises(DataError, match="folder"):
        sq.read_sequences(tmp_path)


def test_holdout_is_per_record_and_has_the_requested_rate():
    ids = [f"F{i % 7}|seq{i}" for i in range(20000)]
    held = sq.holdout_mask(ids, 0.05)
    n = len(ids)
    assert abs(held.mean() - 0.05) < 5 * np.sqrt(0.05 * 0.95 / n)
    # The decision depends on the record alone: any reordering / subset agrees.
    perm = np.random.default_rng(0).permutation(n)[:5000]
    np.testing.assert_array_equal(sq.holdout_mask([ids[i] for i in perm], 0.05), held[perm])
    assert not sq.holdout_mask(ids, 0.0).any()
    with pytest.raises(ValueError):
        sq.holdout_mask(ids, 1.0)


def test_real_split_holds_out_every_family(shared_data):
    data = sq.read_sequences(shared_data / "sequences" / "family_domains_train.fasta")
    held = sq.holdout_mask(data.ids, 0.05)
    assert len(data.family_names) == 40
    per_family = np.bincount(data.labels[held], minlength=40)
    assert per_family.min() >= 5  # whole sequences of every training family are held out
    train_families = np.bincount(data.labels[~held], minlength=40)
    assert train_families.min() > 300
    assert data.num_skipped < 0.005 * len(data)


def test_crop_chunk_bucket_and_pad():
    rng = np.random.default_rng(0)
    seq = np.arange(10, dtype=np.int32) % 20
    for _ in range(20):
        window = sq.crop_window(seq, 4, rng)
        assert len(window) == 4 and window[0] + 3 == window[-1]  # contiguous piece of seq
    assert sq.crop_window(seq, 12, rng) is seq
    pieces = sq.chunk_sequence(seq, 4)
    assert [len(p) for p in pieces] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate(pieces), seq)
    np.testing.assert_array_equal(
        sq.bucket_index(np.array([1, 32, 33, 64]), (32, 64)), [0, 0, 1, 1]
    )
    with pytest.raises(ValueError):
        sq.bucket_index(np.array([65]), (32, 64))
    tokens, mask = sq.pad_batch([seq[:3], seq[:5]], 6)
    assert tokens.shape == (2, 6) and tokens.dtype == np.int32
    np.testing.assert_array_equal(mask.sum(1), [3, 5])
    assert np.all(tokens[~mask] == vocab.PAD)


def test_bucket_batcher_is_deterministic_and_sequence_uniform(tmp_path):
    lines = []
    for i in range(60):
        length = [10, 30, 50][i % 3] if i < 57 else 90  # three with length 90 > max_len
        lines.append(f">F{i % 2}|s{i}\n{'ACDEFGHIKLMNPQRSTVWY'[i % 20] * length}\n")
    data = sq.read_sequences(_write(tmp_path, "".join(lines)))
    batcher = sq.BucketBatcher(data, (16, 32, 64), tokens_per_batch=128, seed=3)
    assert batcher.batch_sizes == [8, 4, 2]
    counts = np.array([len(m) for m in batcher.members])
    np.testing.assert_array_equal(counts, [19, 19, 22])  # 90-long ones cropped into the last bucket
    expected = counts / np.array([8, 4, 2])
    np.testing.assert_allclose(batcher.bucket_probs, expected / expected.sum())
    a, b = batcher(5), batcher(5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    for step in range(10):
        tokens, mask, labels = batcher(step)
        assert tokens.shape[0] * tokens.shape[1] <= 128 and labels.shape == (tokens.shape[0],)
        lengths = mask.sum(1)
        assert np.all(lengths <= tokens.shape[1]) and np.all(lengths > 0)
        for row, n in zip(tokens, lengths, strict=True):
            assert len(set(row[:n].tolist())) == 1  # a crop of one homopolymer record


def test_read_inpaint_fasta(tmp_path):
    path = _write(tmp_path, ">FAM1|x\nAC##e\n>other\n#-A\n")
    records = sq.read_inpaint_fasta(path, ("FAM0", "FAM1"))
    assert [r.label for r in records] == [1, -1]
    np.testing.assert_array_equal(records[0].fill, [False, False, True, True, False])
    np.testing.assert_array_equal(records[0].tokens, [0, 1, vocab.MASK, vocab.MASK, 3])
    np.testing.assert_array_equal(records[1].tokens, [vocab.MASK, 0])
    with pytest.raises(DataError, match="no '#' position"):
        sq.read_inpaint_fasta(_write(tmp_path, ">a\nACD\n", "b.fasta"), ())
    with pytest.raises(DataError, match="ambiguous"):
        sq.read_inpaint_fasta(_write(tmp_path, ">a\nAX#\n", "c.fasta"), ())


def test_sequence_set_npz_roundtrip_and_subset(tmp_path):
    data = sq.read_sequences(_write(tmp_path, ">F1|a\nACD\n>F2|b\nWWYK\n>c\nM\n"))
    held = np.array([False, True, False])
    sq.save_sequence_set(tmp_path / "d.npz", data, holdout=held)
    back, extra = sq.load_sequence_set(tmp_path / "d.npz")
    assert back.ids == data.ids and back.family_names == data.family_names
    np.testing.assert_array_equal(extra["holdout"], held)
    for i in range(3):
        np.testing.assert_array_equal(back.sequence(i), data.sequence(i))
    sub = back.subset(np.array([2, 0]))
    assert sub.ids == ("c", "F1|a") and vocab.decode(sub.sequence(1)) == "ACD"
    np.testing.assert_array_equal(sub.labels, [-1, 0])
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(DataError, match="unreadable"):
        sq.load_sequence_set(tmp_path / "bad.npz")


def _family_less_fasta(tmp_path: Path, count: int = 40) -> Path:
    rng = np.random.default_rng(0)
    records = [
        f">seq{i} a description without a family\n"
        + "".join(rng.choice(list(vocab.AMINO_ACIDS), size=int(rng.integers(10, 40))))
        for i in range(count)
    ]
    return _write(tmp_path, "\n".join(records) + "\n", "plain.fasta")


def test_family_less_fasta_has_no_labels(tmp_path):
    data = sq.read_sequences(_family_less_fasta(tmp_path))
    assert data.family_names == () and len(data) == 40
    assert (data.labels == -1).all()


@pytest.mark.parametrize("method", ["oadm"])  # the network change is shared by every method
def test_seqdiff_trains_unconditionally_on_a_family_less_fasta(method, tmp_path, capsys):
    """Headers without ``FAMILY|``: a one-line note, then an unconditional model (no family
    embedding) trains two steps, loads back from its run folder and samples."""
    import jax

    from protgen_jax.config import apply_overrides
    from protgen_jax.recipes.seqdiff import RECIPE

    tiny = [
        "num_layers=1", "num_heads=2", "model_dim=32", "max_len=32", "buckets=16,32",
        "tokens_per_batch=128", "eval_batches=1", "eval_every=1", "log_every=1", "num_timesteps=4",
        "warmup_steps=0", "sample_batch=8", "devices=1", "steps=2",
    ]  # fmt: skip
    path = _family_less_fasta(tmp_path)
    config = apply_overrides(RECIPE.make_config(method), [f"data={path}", *tiny])
    data = RECIPE.prepare(config, progress=False)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith(f"note: {path}: no header has a FAMILY|id")
    model = RECIPE.build_model(config, data)
    assert model.module.num_classes == 0
    params = jax.eval_shape(model.init, jax.random.key(0))
    assert "class_embed" not in str(jax.tree_util.tree_structure(params))
    assert {g.arrays["labels"].max() for g in RECIPE.batches(config, data)} == {-1}

    run = tmp_path / "run"
    summary = RECIPE.train(config, run, progress=False)
    assert summary["steps"] == 2 and np.isfinite(summary["last_train"]["loss"])
    loaded = RECIPE.load_run(run)
    assert loaded.data.family_names == () and loaded.model.module.num_classes == 0
    out = tmp_path / "samples.fasta"
    RECIPE.run_command("sample", [run], {"out": out, "num": 3, "quiet": True})
    assert out.read_text().count(">") == 3
    with pytest.raises(DataError, match="'X': this run was trained without family labels"):
        RECIPE.run_command("sample", [run], {"out": out, "num": 3, "family": "X", "quiet": True})
    if method == "oadm":  # the evaluation skips the family-fidelity report, and says so with None
        report = RECIPE.run_command("evaluate", [run], {"out": tmp_path / "e.json", "num": 2})
        assert report["conditional"] is None and np.isfinite(report["perplexity"])
        assert report["inpainting"]["num_sequences"] >= 1


def test_split_families_equals_reading_a_file_without_them(tmp_path):
    records = [("A|1", "ACDE"), ("B|2", "KLMN"), ("C|3", "WWYY"), ("A|4", "PPQQ"), ("x5", "GGG")]
    full = sq.read_sequences(_write(tmp_path, "".join(f">{h}\n{s}\n" for h, s in records)))
    kept, removed = sq.split_families(full, ("B",))
    text = "".join(f">{h}\n{s}\n" for h, s in records if not h.startswith("B|"))
    direct = sq.read_sequences(_write(tmp_path, text, "kept.fasta"))
    assert kept.family_names == direct.family_names == ("A", "C")
    np.testing.assert_array_equal(kept.labels, direct.labels)  # [0, 1, 0, -1]
    np.testing.assert_array_equal(kept.tokens, direct.tokens)
    assert kept.ids == direct.ids and removed.ids == ("B|2",)
    assert vocab.decode(removed.sequence(0)) == "KLMN"
    with pytest.raises(DataError, match="'Z' is not a family"):
        sq.split_families(full, ("Z",))
    joined = sq.concatenate(kept, removed)
    assert joined.ids == kept.ids + removed.ids and joined.family_names == ("A", "C")
    assert vocab.decode(joined.sequence(len(kept))) == "KLMN"
    for i in range(len(kept)):
        np.testing.assert_array_equal(joined.sequence(i), kept.sequence(i))


def test_unseen_families_are_left_out_of_training_and_written_for_evaluation(tmp_path):
    from protgen_jax.config import apply_overrides
    from protgen_jax.recipes.base import RunDir
    from protgen_jax.recipes.seqdiff import RECIPE

    rng = np.random.default_rng(1)
    lines = []
    for fam in ("F1", "F2", "F3"):
        for i in range(20):
            seq = "".join(rng.choice(list(vocab.AMINO_ACIDS), size=int(rng.integers(10, 30))))
            lines.append(f">{fam}|s{i}\n{seq}\n")
    path = _write(tmp_path, "".join(lines), "three.fasta")
    config = apply_overrides(RECIPE.make_config("oadm"), [f"data={path}", "unseen_families=F2"])
    data = RECIPE.prepare(config, progress=False)
    assert data.family_names == ("F1", "F3") and len(data.sequences) == 40
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    RECIPE.save_data(run, data)
    unseen = sq.read_sequences(run.file("unseen.fasta"))
    assert unseen.family_names == ("F2",) and len(unseen) == 20
    assert RECIPE.load_data(run).family_names == ("F1", "F3")
    assert RECIPE.load_data(run).extra is None

    # unlabelled extra data: minus copies of validation sequences and near-copies of F2
    validation = [data.sequences.sequence(i) for i in np.flatnonzero(data.holdout)]
    f2_copy = vocab.decode(unseen.sequence(0))
    extra_lines = [
        f">cath|4_1_0|x{i}\n{s}\n" for i, s in enumerate(["ACDEFGHIKL" * 3, "WWYYPP" * 4])
    ]
    extra_lines += [f">v\n{vocab.decode(validation[0])}\n", f">near\nG{f2_copy}\n", ">amb\nACXD\n"]
    extra_path = _write(tmp_path, "".join(extra_lines), "extra.fasta")
    config = apply_overrides(config, [f"extra_data={extra_path}", "extra_fraction=0.5"])
    data = RECIPE.prepare(config, progress=False)
    assert data.extra.ids == ("cath|4_1_0|x0", "cath|4_1_0|x1") and data.extra_dropped == 2
    assert np.all(data.extra.labels == -1) and data.extra.num_skipped == 0
    RECIPE.save_data(run, data)
    loaded = RECIPE.load_data(run)
    np.testing.assert_array_equal(loaded.extra.tokens, data.extra.tokens)
    assert loaded.extra_dropped == 2
    for bad in ("extra_fraction=1.0", "extra_fraction=0", "extra_max_overlap=2"):
        with pytest.raises(DataError, match=bad.split("=")[0]):
            RECIPE.validate(apply_overrides(config, [bad]))
    with pytest.raises(DataError, match="extra_data '@nothing'"):
        RECIPE.prepare(apply_overrides(config, ["extra_data=@nothing"]), progress=False)


def test_fine_tuning_starts_new_families_from_the_null_family_row():
    import jax.numpy as jnp

    from protgen_jax.recipes.seqdiff import RECIPE

    source = np.arange(12, dtype=np.float32).reshape(4, 3)  # 3 families + the null row [9, 10, 11]
    name = "['params']['transformer']['time_embed']['class_embed']['embedding']"
    adapted = RECIPE.adapt_init_leaf(name, source, jnp.zeros((2, 3)))
    np.testing.assert_array_equal(adapted, [[9, 10, 11], [9, 10, 11]])
    assert RECIPE.adapt_init_leaf("['params']['other']", source, jnp.zeros((2, 3))) is None
