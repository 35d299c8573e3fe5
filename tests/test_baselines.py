"""The site-independent baseline: weighted counts with a pseudocount, with and without modelling gaps."""

import numpy as np

from protgen_jax.baselines import SiteIndependentModel

TOKENS = np.array([[0, 1], [0, 20], [2, 1]])  # 3 sequences, 2 columns; 20 = gap


def test_fit_is_weighted_counts_plus_pseudocount():
    model = SiteIndependentModel.fit(TOKENS, weights=np.array([1.0, 2.0, 1.0]), pseudocount=0.5)
    # Column 0: letter 0 weight 3, letter 2 weight 1, plus 0.5 on each of 21 letters.
    total = 4.0 + 21 * 0.5
    np.testing.assert_allclose(
        np.exp(model.log_f[0, [0, 2, 5]]), [3.5 / total, 1.5 / total, 0.5 / total]
    )
    np.testing.assert_allclose(np.exp(model.log_f).sum(-1), 1.0)
    expected = model.log_f[0, 0] + model.log_f[1, 20]
    np.testing.assert_allclose(model.log_prob(TOKENS[1:2]), [expected])


def test_unmodelled_gaps_are_never_sampled_and_skipped_in_log_prob():
    model = SiteIndependentModel.fit(TOKENS, pseudocount=0.5, gap_token=20)
    f = np.exp(model.log_f)
    assert np.all(f[:, 20] == 0) and np.allclose(f.sum(-1), 1.0)
    # Column 1 without the gap: letter 1 count 2 of 2 sequences, plus 0.5 on each of the 20 residues.
    np.testing.assert_allclose(f[1, 1], 2.5 / (2.0 + 20 * 0.5))
    np.testing.assert_allclose(model.log_prob(TOKENS[1:2]), [model.log_f[0, 0]])  # gap skipped
    samples = model.sample(np.random.default_rng(0), 2000)
    assert samples.max() < 20
