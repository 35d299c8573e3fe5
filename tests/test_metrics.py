"""Evaluation statistics against values computed by hand."""

import numpy as np
import pytest

from protgen_jax import metrics

# Three aligned sequences of width 3 over the 21-letter alignment alphabet (20 = gap).
ALIGNED = np.array([[0, 1, 20], [0, 2, 3], [4, 1, 3]])


def test_column_frequencies_by_hand():
    freq = metrics.column_frequencies(ALIGNED)
    assert freq.shape == (3, 21)
    np.testing.assert_allclose(freq[0, [0, 4]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(freq[1, [1, 2]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(freq[2, [3, 20]], [2 / 3, 1 / 3])
    np.testing.assert_allclose(freq.sum(1), 1.0)


def test_pair_covariance_by_hand():
    """C_ij(a, b) = f_ij(a, b) - f_i(a) f_j(b): columns 0 and 1, letters A (0) and C (1)."""
    cov = metrics.pair_covariances(ALIGNED)
    # f_01(A, C) = 1/3 (row 0), f_0(A) = 2/3, f_1(C) = 2/3 -> 1/3 - 4/9 = -1/9
    flat = np.asarray(cov).reshape(-1)
    assert np.any(np.isclose(flat, -1 / 9))
    # columns 0 and 1 with letters E (4) and C (1): f = 1/3, f_0(E) f_1(C) = 1/3 * 2/3 -> +1/9
    assert np.any(np.isclose(flat, 1 / 9))


def test_novelty_is_the_identity_to_the_nearest_reference():
    samples = np.array([[0, 1, 20], [5, 5, 5], [0, 2, 5]])
    nearest = metrics.novelty(samples, ALIGNED)
    # sample 0 equals row 0 (its gap is left out: 2/2); sample 1 shares no letter; sample 2 matches
    # row 1 at two of three positions
    np.testing.assert_allclose(nearest, [1.0, 0.0, 2 / 3], atol=1e-6)


def test_composition_and_total_variation_by_hand():
    seqs = [np.array([0, 0, 1]), np.array([1, 2])]
    comp = metrics.composition(seqs)
    np.testing.assert_allclose(comp[:3], [2 / 5, 2 / 5, 1 / 5])
    assert comp[3:].sum() == 0
    uniform = np.full(20, 1 / 20)
    # 0.5 * (|0.4 - 0.05| * 2 + |0.2 - 0.05| + 17 * 0.05) = 0.5 * (0.7 + 0.15 + 0.85) = 0.85
    assert metrics.total_variation(comp, uniform) == pytest.approx(0.85)


def test_kmer_ids_and_spectrum_by_hand():
    # 3-mers of ACDA: (A, C, D) and (C, D, A) -> 0*400 + 1*20 + 2 = 22 and 1*400 + 2*20 + 0 = 440
    np.testing.assert_array_equal(metrics.kmer_ids(np.array([0, 1, 2, 0])), [22, 440])
    assert len(metrics.kmer_ids(np.array([0, 1]))) == 0
    spectrum = metrics.kmer_spectrum([np.array([0, 1, 2, 0]), np.array([0, 1, 2])])
    assert spectrum.shape == (8000,)
    np.testing.assert_allclose(spectrum[[22, 440]], [2 / 3, 1 / 3])


def test_alignment_identity_counts_matches_over_the_first_length():
    a = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    assert metrics.alignment_identity(a, a) == 1.0
    b = a.copy()
    b[[1, 5]] = 19  # two substitutions
    assert metrics.alignment_identity(a, b) == pytest.approx(6 / 8)
