"""Schedules, the forward process, the posterior and the losses against independent NumPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax import diffusion as dif


def test_linear_schedule_matches_numpy():
    s = dif.linear_schedule()
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - betas), rtol=1e-5)
    np.testing.assert_allclose(
        s.sqrt_one_minus_alpha_bars, np.sqrt(1 - np.cumprod(1 - betas)), rtol=1e-5
    )
    assert s.betas.dtype == jnp.float32 and s.num_steps == 1000


@pytest.mark.parametrize("make", [dif.linear_schedule, dif.cosine_schedule])
def test_alpha_bars_strictly_decreasing(make):
    ab = np.asarray(make(1000).alpha_bars, np.float64)
    assert np.all(np.diff(ab) < 0)
    assert 0 < ab[-1] < 1e-3 or make is dif.cosine_schedule


def test_cosine_schedule_endpoints():
    s = dif.cosine_schedule(1000)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    # first step: alpha_bar_0 = f(1/T)/f(0); last beta is clipped at 0.999
    np.testing.assert_allclose(s.alpha_bars[0], f(1e-3) / f(0.0), rtol=1e-6)
    np.testing.assert_allclose(s.betas[-1], 0.999, rtol=1e-6)
    assert float(s.betas.max()) <= 0.999 + 1e-7
    assert float(s.alpha_bars[-1]) < 1e-6
    # halfway the cosine schedule keeps more signal than the linear one (its selling point)
    assert float(s.alpha_bars[500]) > float(dif.linear_schedule().alpha_bars[500])


def test_posterior_matches_bayes_formula():
    s = dif.linear_schedule()
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    x0 = np.array([[0.7, -1.2]])
    xt = np.array([[0.1, 0.5]])
    for t in [1, 10, 500, 999]:
        # prior q(x_{t-1}|x0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}); likelihood q(x_t|x_{t-1}) = N(sqrt(a_t) x, b_t)
        prec = 1 / (1 - ab[t - 1]) + (1 - betas[t]) / betas[t]
        var = 1 / prec
        mean = var * (
            np.sqrt(ab[t - 1]) * x0 / (1 - ab[t - 1]) + np.sqrt(1 - betas[t]) * xt / betas[t]
        )
        m, v, logv = dif.q_posterior(s, jnp.asarray(x0), jnp.asarray(xt), jnp.array([t]))
        np.testing.assert_allclose(m, mean, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(v[0, 0], var, rtol=2e-4)
        np.testing.assert_allclose(logv[0, 0], np.log(var), rtol=2e-4, atol=1e-5)
    # t = 0: the posterior is the point mass at x0
    m, v, _ = dif.q_posterior(s, jnp.asarray(x0), jnp.asarray(xt), jnp.array([0]))
    np.testing.assert_allclose(m, x0, atol=1e-6)
    assert float(v[0, 0]) == 0.0


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_moments(t):
    s = dif.linear_schedule()
    n = 100_000
    x0 = jnp.full((n, 1), 1.5)
    noise = jax.random.normal(jax.random.key(t), (n, 1))
    x = np.asarray(dif.q_sample(s, x0, jnp.full((n,), t), noise))[:, 0]
    ab = float(s.alpha_bars[t])
    var = 1 - ab
    assert abs(x.mean() - np.sqrt(ab) * 1.5) < 5 * np.sqrt(var / n)
    assert abs(x.var() - var) < 5 * var * np.sqrt(2 / n)


def test_q_sample_at_t0_is_close_to_x0():
    s = dif.linear_schedule()
    x0 = jax.random.normal(jax.random.key(0), (4, 10, 3))
    noise = jax.random.normal(jax.random.key(1), (4, 10, 3))
    x = dif.q_sample(s, x0, jnp.zeros(4, jnp.int32), noise)
    assert float(jnp.max(jnp.abs(x - x0))) < 0.05


def test_prediction_conversions_round_trip():
    s = dif.cosine_schedule(200)
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k1, (8, 5, 3))
    eps = jax.random.normal(k2, (8, 5, 3))
    t = jnp.arange(8) * 25
    xt = dif.q_sample(s, x0, t, eps)
    np.testing.assert_allclose(dif.x0_from_eps(s, xt, t, eps), x0, atol=2e-4)
    np.testing.assert_allclose(dif.eps_from_x0(s, xt, t, x0), eps, atol=2e-4)
    v = dif.v_from_x0_eps(s, x0, t, eps)
    np.testing.assert_allclose(dif.x0_from_v(s, xt, t, v), x0, atol=2e-5)
    np.testing.assert_allclose(dif.eps_from_v(s, xt, t, v), eps, atol=2e-5)
    score = dif.score_from_eps(s, t, eps)
    np.testing.assert_allclose(dif.eps_from_score(s, t, score), eps, atol=1e-6)
    # the score of q(x_t | x0) at x_t is -(x_t - sqrt(ab) x0) / (1 - ab)
    ab = s.alpha_bars[t][:, None, None]
    np.testing.assert_allclose(score, -(xt - jnp.sqrt(ab) * x0) / (1 - ab), rtol=1e-3, atol=1e-4)
    for kind in ("eps", "x0", "v"):
        target = dif.regression_target(s, x0, t, eps, kind)
        x0_hat, eps_hat = dif.to_x0_eps(s, xt, t, target, kind)
        np.testing.assert_allclose(x0_hat, x0, atol=3e-4)
        np.testing.assert_allclose(eps_hat, eps, atol=3e-4)


def test_noise_mse_masks_padding():
    pred = jnp.zeros((2, 4, 3))
    target = jnp.ones((2, 4, 3)).at[:, 3].set(100.0)
    mask = jnp.array([[True, True, True, False], [True, False, False, False]])
    np.testing.assert_allclose(dif.noise_mse(pred, target, mask), [1.0, 1.0])
    np.testing.assert_allclose(dif.noise_mse(pred, target), [(9 + 3e4) / 12] * 2, rtol=1e-6)


def test_diffusion_loss_is_zero_for_oracle_and_agrees_under_jit_and_vmap():
    s = dif.linear_schedule(100)
    x0 = jax.random.normal(jax.random.key(0), (6, 2))
    key = jax.random.key(1)

    def oracle(x_t, t, mask, cond):  # knows x0, so it returns the exact noise
        return dif.eps_from_x0(s, x_t, t, x0)

    np.testing.assert_allclose(dif.diffusion_loss(key, oracle, s, x0), 0.0, atol=1e-6)

    def net(x_t, t, mask, cond):
        return 0.5 * x_t

    loss = dif.diffusion_loss(key, net, s, x0)
    np.testing.assert_allclose(
        jax.jit(dif.diffusion_loss, static_argnums=1)(key, net, s, x0), loss, rtol=1e-6
    )
    assert loss.shape == (6,) and bool(jnp.all(loss > 0))


def test_q_sample_vmap_equals_batched():
    s = dif.linear_schedule()
    x0 = jax.random.normal(jax.random.key(0), (5, 7, 3))
    noise = jax.random.normal(jax.random.key(1), (5, 7, 3))
    t = jnp.array([0, 3, 50, 700, 999])
    batched = dif.q_sample(s, x0, t, noise)
    single = jax.vmap(lambda x, tt, n: dif.q_sample(s, x[None], tt[None], n[None])[0])(x0, t, noise)
    np.testing.assert_allclose(single, batched, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(dif.q_sample)(s, x0, t, noise), batched, rtol=1e-6)


def test_self_conditioned_loss_feeds_the_stopped_first_estimate_back():
    s = dif.linear_schedule(100)
    x0 = jax.random.normal(jax.random.key(0), (6, 2))
    key = jax.random.key(1)

    def net(x_t, t, mask, cond, self_cond=None):
        # First pass (zeros): x0 + 1. Second pass: the estimate it is given - 1, i.e. x0 exactly.
        first = jnp.all(self_cond == 0)
        return dif.eps_from_x0(s, x_t, t, jnp.where(first, x0 + 1.0, self_cond - 1.0))

    np.testing.assert_allclose(
        dif.diffusion_loss(key, net, s, x0, self_condition=1.0), 0.0, atol=1e-5
    )
    # Never self-conditioned: every batch is a first pass, off by 1 in x0.
    assert bool(jnp.all(dif.diffusion_loss(key, net, s, x0, self_condition=1e-9) > 1e-3))
    # The two-pass wrapper for one-off calls gives the second pass as well.
    t = jnp.arange(6) * 10
    x_t = dif.q_sample(s, x0, t, jnp.ones_like(x0))
    np.testing.assert_allclose(dif.self_conditioned(net, s)(x_t, t), jnp.ones_like(x0), atol=1e-4)


def test_x0_term_adds_the_weighted_x0_error_below_its_cutoff():
    s = dif.linear_schedule(100)
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    key = jax.random.key(1)

    def net(x_t, t, mask, cond):
        return 0.5 * x_t

    base = dif.diffusion_loss(key, net, s, x0)
    # Recompute t and the noise as diffusion_loss draws them.
    t_key, n_key = jax.random.split(key)
    t = jax.random.randint(t_key, (64,), 0, 100)
    noise = dif.standard_normal(n_key, x0.shape)
    x_t = dif.q_sample(s, x0, t, noise)
    x0_err = dif.noise_mse(dif.x0_from_eps(s, x_t, t, 0.5 * x_t), x0)
    with_term = dif.diffusion_loss(key, net, s, x0, x0_weight=3.0, x0_max_t=40)
    expected = base + 3.0 * (t < 40) * x0_err
    assert 0 < int(jnp.sum(t < 40)) < 64
    np.testing.assert_allclose(with_term, expected, rtol=1e-5)
