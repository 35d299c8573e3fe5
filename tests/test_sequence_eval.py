"""protgen_jax.sequence_eval with oracle generators whose reports are known by hand."""

import jax
import numpy as np
import pytest

from protgen_jax import keys
from protgen_jax.baselines import KmerNaiveBayes, UnigramBaseline
from protgen_jax.data.sequences import SequenceSet
from protgen_jax.sequence_eval import (
    chunk_all,
    conditional_report,
    inpaint_masks,
    inpainting_report,
    perplexity_report,
)

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
SEQS = [RNG.integers(0, 20, size=n).astype(np.int32) for n in (30, 41, 17, 25)]
LABELS = np.array([0, 1, -1, 0], np.int32)


def _set(seqs, labels, names=("F0", "F1")):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return SequenceSet(
        ids=tuple(f"s{i}" for i in range(len(seqs))), family_names=names,
        labels=np.asarray(labels, np.int32), tokens=np.concatenate(seqs).astype(np.int8),
        offsets=offsets,
    )  # fmt: skip


def test_chunk_all_splits_long_sequences_and_keeps_labels():
    pieces, labels = chunk_all(SEQS, LABELS, max_len=20)
    assert [len(p) for p in pieces] == [15, 15, 14, 14, 13, 17, 13, 12]
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 1, -1, 0, 0])
    np.testing.assert_array_equal(np.concatenate(pieces), np.concatenate(SEQS))


@pytest.mark.parametrize("span", [False, True])
def test_inpaint_masks_hide_the_requested_count(span):
    lengths = np.array([10, 3, 40])
    masks = inpaint_masks(lengths, 0.3, span, np.random.default_rng(1))
    assert [int(m.sum()) for m in masks] == [3, 1, 12]
    if span:  # one contiguous run
        assert all(np.count_nonzero(np.diff(m.astype(int)) != 0) <= 2 for m in masks)


def test_perplexity_report_of_the_uniform_model_is_20():
    calls = []

    def uniform_nll(seqs, labels, key):
        calls.append(np.asarray(labels).copy())
        return np.array([len(s) * np.log(20.0) for s in seqs])

    baseline = UnigramBaseline.fit(SEQS, LABELS, 2)
    report = perplexity_report(uniform_nll, SEQS, LABELS, KEY, baseline)
    assert report["perplexity"] == pytest.approx(20.0)
    assert report["perplexity_unconditional"] == pytest.approx(20.0)
    assert report["baselines"]["uniform"] == pytest.approx(20.0)
    assert report["num_residues"] == 113 and report["num_with_known_family"] == 3
    np.testing.assert_array_equal(calls[1], -1)  # the unconditional pass drops every label
    residues = np.concatenate(SEQS)
    by_hand = np.exp(-np.mean(baseline.row(-1)[residues]))
    assert report["baselines"]["unigram"] == pytest.approx(by_hand)
    unlabelled = perplexity_report(uniform_nll, SEQS, np.full(4, -1), KEY, baseline)
    assert "perplexity_unconditional" not in unlabelled


def test_inpainting_report_scores_an_oracle_and_a_constant_filler():
    baseline = UnigramBaseline.fit(SEQS, LABELS, 2)

    def oracle(key, lengths, labels, guidance, temperature, fixed):
        return [s.copy() for s in SEQS]

    def all_alanine(key, lengths, labels, guidance, temperature, fixed):
        return [np.where(keep, seq, 0) for seq, keep in fixed]

    perfect = inpainting_report(oracle, SEQS, LABELS, KEY, baseline, fractions=(0.3,))
    for name in ("random_30", "span_30"):
        assert perfect[name]["model_recovery"] == 1.0
        assert perfect[name]["model_recovery_greedy"] == 1.0
        assert perfect[name]["unmasked_positions_kept"]
    constant = inpainting_report(all_alanine, SEQS, LABELS, KEY, baseline, fractions=(0.3,))
    hidden = inpaint_masks(  # the positions the report hides for "random_30"
        np.array([len(s) for s in SEQS]), 0.3, False,
        keys.numpy_rng(keys.named(KEY, "random_30", "hide")),
    )  # fmt: skip
    truth = np.concatenate([s[h] for s, h in zip(SEQS, hidden, strict=True)])
    random_30 = constant["random_30"]
    assert random_30["num_hidden"] == len(truth) == sum(round(0.3 * len(s)) for s in SEQS)
    assert random_30["model_recovery"] == pytest.approx(np.mean(truth == 0))
    assert random_30["unmasked_positions_kept"]
    rows = np.concatenate(
        [
            np.repeat(baseline.row(int(lab))[None], h.sum(), 0)
            for lab, h in zip(LABELS, hidden, strict=True)
        ]
    )
    sampled = np.mean(np.exp(rows[np.arange(len(truth)), truth]))
    assert random_30["family_unigram_sampled_recovery"] == pytest.approx(sampled)
    # the same hidden positions for both fills: the oracle hid as many residues
    assert perfect["random_30"]["num_hidden"] == random_30["num_hidden"]


def test_conditional_report_counts_samples_of_the_requested_family():
    family_seq = {0: np.zeros(20, np.int32), 1: np.full(20, 18, np.int32)}  # A..A and W..W
    train_seqs = [family_seq[i % 2] for i in range(8)]
    train = _set(train_seqs, [i % 2 for i in range(8)])
    classifier = KmerNaiveBayes.fit(train_seqs, train.labels, 2)

    def faithful(key, lengths, labels, guidance, temperature, fixed):
        return [family_seq[int(lab)][:n] for lab, n in zip(labels, lengths, strict=True)]

    def ignores_family(key, lengths, labels, guidance, temperature, fixed):
        return [family_seq[0][:n] for n in lengths]

    common = dict(num_families=2, samples_per_family=3, scales=(1.0, 2.0), max_len=20)
    args = (train, classifier, train_seqs[:2], np.array([0, 1]), KEY)
    good = conditional_report(faithful, *args, **common)
    assert good["classifier_accuracy_natural_heldout"] == 1.0
    assert good["fraction_assigned_guidance_1"] == good["fraction_assigned_guidance_2"] == 1.0
    bad = conditional_report(ignores_family, *args, **common)
    assert bad["fraction_assigned_guidance_1"] == 0.5
