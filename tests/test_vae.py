"""Tests of the VAE math against independent NumPy formulas, Monte-Carlo estimates and analytic gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax import vae


def _numpy_kl(mu, logvar):
    """KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, summed over dims (independent form)."""
    s = np.exp(0.5 * logvar)
    return np.sum(-np.log(s) + (s**2 + mu**2) / 2.0 - 0.5, axis=-1)


def test_gaussian_kl_matches_numpy_formula():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 7)).astype(np.float32)
    logvar = rng.normal(size=(5, 7)).astype(np.float32)
    np.testing.assert_allclose(vae.gaussian_kl(mu, logvar), _numpy_kl(mu, logvar), rtol=1e-5)


def test_gaussian_kl_is_zero_at_prior_and_positive_elsewhere():
    zeros = jnp.zeros((3, 4))
    np.testing.assert_allclose(vae.gaussian_kl(zeros, zeros), 0.0, atol=1e-7)
    mu = jnp.full((3, 4), 0.3)
    assert bool(jnp.all(vae.gaussian_kl(mu, zeros) > 0))
    assert bool(jnp.all(vae.gaussian_kl(zeros, jnp.full((3, 4), -0.5)) > 0))


def test_gaussian_kl_matches_monte_carlo():
    mu = jnp.array([[0.5, -1.0, 0.2]])
    logvar = jnp.array([[-0.4, 0.3, 0.0]])
    n = 200_000
    z = vae.reparameterize(jax.random.key(0), jnp.repeat(mu, n, 0), jnp.repeat(logvar, n, 0))
    log_ratio = vae.gaussian_log_prob(z, mu, logvar) - vae.standard_normal_log_prob(z)
    estimate = float(jnp.mean(log_ratio))
    stderr = float(jnp.std(log_ratio)) / np.sqrt(n)
    assert abs(estimate - float(vae.gaussian_kl(mu, logvar)[0])) < 5 * stderr


def test_reparameterized_gradient_matches_analytic():
    # E_{z ~ N(mu, e^lv)}[sum z^2] = sum(mu^2 + e^lv): d/dmu = 2 mu, d/dlv = e^lv.
    mu = jnp.array([[0.7, -0.3]])
    logvar = jnp.array([[0.2, -1.0]])
    n = 100_000
    eps = jax.random.normal(jax.random.key(1), (n, 1, 2))

    def objective(mu, logvar):
        z = vae.reparameterize_with_noise(mu[None], logvar[None], eps)
        return jnp.mean(jnp.sum(z**2, axis=-1))

    g_mu, g_lv = jax.grad(objective, argnums=(0, 1))(mu, logvar)
    np.testing.assert_allclose(g_mu, 2 * mu, atol=0.02)
    np.testing.assert_allclose(g_lv, jnp.exp(logvar), atol=0.02)


def test_categorical_log_likelihood_matches_numpy_and_respects_mask():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 21)).astype(np.float32)
    tokens = rng.integers(0, 21, size=(2, 4)).astype(np.int32)
    mask = np.array([[True, True, False, True], [True, False, False, False]])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    expected = (picked * mask).sum(-1)
    np.testing.assert_allclose(
        vae.categorical_log_likelihood(logits, tokens, mask), expected, rtol=1e-5
    )
    np.testing.assert_allclose(
        vae.categorical_log_likelihood(logits, tokens), picked.sum(-1), rtol=1e-5
    )


def test_negative_elbo_terms_add_up_with_beta():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(3, 5, 21)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, 21, size=(3, 5)), jnp.int32)
    mu = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    logvar = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    terms = vae.negative_elbo(logits, tokens, mu, logvar, beta=0.25)
    chex.assert_shape([terms.loss, terms.nll, terms.kl], (3,))
    np.testing.assert_allclose(terms.loss, terms.nll + 0.25 * terms.kl, rtol=1e-6)
    np.testing.assert_allclose(terms.neg_elbo, terms.nll + terms.kl, rtol=1e-6)
    np.testing.assert_allclose(
        terms.nll, -vae.categorical_log_likelihood(logits, tokens), rtol=1e-6
    )


def _toy_vae(latent_dim=2, length=3, k=4):
    w_enc = jax.random.normal(jax.random.key(3), (length * k, 2 * latent_dim)) * 0.3
    w_dec = jax.random.normal(jax.random.key(4), (latent_dim, length * k))

    def encode(tokens):
        h = jax.nn.one_hot(tokens, k).reshape(tokens.shape[0], -1) @ w_enc
        return h[:, :latent_dim], h[:, latent_dim:] - 1.0

    def decode(z):
        return (z @ w_dec).reshape(z.shape[0], length, k)

    return encode, decode


def test_iwae_is_exact_when_posterior_equals_prior_and_decoder_ignores_z():
    logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    tokens = jnp.array([[0, 3, 2], [1, 1, 1]])

    def encode(x):
        return jnp.zeros((x.shape[0], 2)), jnp.zeros((x.shape[0], 2))

    def decode(z):
        return jnp.broadcast_to(logits, (z.shape[0], 3, 4))

    bound = vae.iwae_bound(jax.random.key(0), encode, decode, tokens, num_samples=7, latent_dim=2)
    exact = np.log([0.1 * 0.4 * 0.3, 0.2**3])
    np.testing.assert_allclose(bound, exact, rtol=1e-5)


def test_iwae_tightens_with_more_samples_and_m1_is_the_elbo():
    encode, decode = _toy_vae()
    tokens = jnp.array([[0, 1, 2], [3, 3, 0]])
    eps = jax.random.normal(jax.random.key(5), (1, 2, 2))
    m1 = vae.iwae_bound_with_noise(encode, decode, tokens, eps)
    mu, logvar = encode(tokens)
    z = vae.reparameterize_with_noise(mu, logvar, eps[0])
    one_sample_elbo = (
        vae.categorical_log_likelihood(decode(z), tokens)
        + vae.standard_normal_log_prob(z)
        - vae.gaussian_log_prob(z, mu, logvar)
    )
    np.testing.assert_allclose(m1, one_sample_elbo, rtol=1e-5)
    keys = jax.random.split(jax.random.key(6), 64)
    elbo = jnp.mean(jax.vmap(lambda k: vae.iwae_bound(k, encode, decode, tokens, 1, 2))(keys), 0)
    iwae = jnp.mean(jax.vmap(lambda k: vae.iwae_bound(k, encode, decode, tokens, 64, 2))(keys), 0)
    assert bool(jnp.all(iwae > elbo))


@pytest.mark.parametrize("fn", [vae.gaussian_kl])
def test_jit_and_vmap_agree_with_batched_call(fn):
    rng = np.random.default_rng(3)
    mu = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    logvar = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    batched = fn(mu, logvar)
    np.testing.assert_allclose(jax.jit(fn)(mu, logvar), batched, rtol=1e-6)
    per_example = jax.vmap(lambda m, lv: fn(m[None], lv[None])[0])(mu, logvar)
    np.testing.assert_allclose(per_example, batched, rtol=1e-6)
