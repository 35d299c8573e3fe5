"""The reverse loop, proven end to end with the exact denoiser of Gaussian data.

For ``x0 ~ N(m, s^2 I)``: ``x_t ~ N(sqrt(ab) m, v_t)`` with ``v_t = ab s^2 + 1 - ab`` and the optimal noise
prediction is ``E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) m) / v_t``. Samplers driven by it must return
``N(m, s^2)``; for ``s = 1`` and ``sigma_t^2 = beta_t`` the model's reverse chain *is* the true one, so its
variational bound equals the true negative log-likelihood.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from protgen_jax import diffusion as dif

MEAN = jnp.array([1.5, -0.5])
N = 4000


def _optimal_eps(schedule, var, x_t, t, mask, cond):
    ab = schedule.alpha_bars[t][:, None]
    return jnp.sqrt(1 - ab) * (x_t - jnp.sqrt(ab) * MEAN[None]) / (ab * var + 1 - ab)


def _assert_gaussian(x, var, bias_allowance=0.0):
    x = np.asarray(x)
    n = x.shape[0]
    np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(MEAN)), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(x.var(0) - var), 5 * var * np.sqrt(2 / n) + bias_allowance)


@pytest.fixture(scope="module")
def schedule():
    return dif.linear_schedule()


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_recovers_gaussian(schedule, variance):
    fn = Partial(_optimal_eps, schedule, 0.25)
    x = dif.ddpm_sample(jax.random.key(0), fn, schedule, (N, 2), variance=variance)
    _assert_gaussian(x, 0.25)


def _reduced_noise_variance(schedule, var, noise_scale):
    """Exact output variance of DDPM (sigma^2 = beta) driven by the exact eps, per-step noise scaled.

    Every step is affine in ``x_t``: ``x0_hat = c + sqrt(ab) s^2 / v_t x_t``, so
    ``Var_{t-1} = (coef1 sqrt(ab) s^2 / v_t + coef2)^2 Var_t + noise_scale^2 beta_t [t > 0]``, from 1.
    """
    ab = np.asarray(schedule.alpha_bars, np.float64)
    c1 = np.asarray(schedule.posterior_mean_coef1, np.float64)
    c2 = np.asarray(schedule.posterior_mean_coef2, np.float64)
    betas = np.asarray(schedule.betas, np.float64)
    v = 1.0
    for t in range(len(betas) - 1, -1, -1):
        slope = c1[t] * np.sqrt(ab[t]) * var / (ab[t] * var + 1 - ab[t]) + c2[t]
        v = slope**2 * v + (noise_scale**2 * betas[t] if t > 0 else 0.0)
    return v


def test_ddpm_noise_scale_shrinks_variance_as_computed(schedule):
    fn = Partial(_optimal_eps, schedule, 0.25)
    default = dif.ddpm_sample(jax.random.key(3), fn, schedule, (64, 2))
    same = dif.ddpm_sample(jax.random.key(3), fn, schedule, (64, 2), noise_scale=1.0)
    np.testing.assert_array_equal(default, same)
    expected = _reduced_noise_variance(schedule, 0.25, 0.5)
    assert expected < 0.2  # clearly below the data variance 0.25
    x = dif.ddpm_sample(jax.random.key(4), fn, schedule, (N, 2), noise_scale=0.5)
    _assert_gaussian(x, expected)
    with pytest.raises(ValueError, match="noise_scale"):
        dif.ddpm_sample(jax.random.key(4), fn, schedule, (4, 2), noise_scale=-1.0)


@pytest.mark.parametrize("num_steps,eta", [(250, 0.0), (1000, 1.0)])
def test_ddim_recovers_gaussian(schedule, num_steps, eta):
    fn = Partial(_optimal_eps, schedule, 0.25)
    x = dif.ddim_sample(jax.random.key(1), fn, schedule, (N, 2), num_steps=num_steps, eta=eta)
    _assert_gaussian(x, 0.25)


def test_ddim_with_few_steps_is_deterministic_given_the_key(schedule):
    fn = Partial(_optimal_eps, schedule, 0.25)
    a = dif.ddim_sample(jax.random.key(2), fn, schedule, (64, 2), num_steps=20)
    b = dif.ddim_sample(jax.random.key(2), fn, schedule, (64, 2), num_steps=20)
    np.testing.assert_array_equal(a, b)
    assert np.all(dif.ddim_timesteps(1000, 20)[[0, -1]] == [999, 0])


def test_variational_bound_of_exact_model_equals_true_nll(schedule):
    fn = Partial(_optimal_eps, schedule, 1.0)
    x0 = MEAN[None] + jax.random.normal(jax.random.key(3), (4096, 2))
    nll = np.log(2 * np.pi) + 0.5 * np.sum(np.square(np.asarray(x0 - MEAN[None])), -1)
    vb = dif.variational_bound(jax.random.key(4), fn, schedule, x0, variance="beta")
    gap = np.asarray(vb.total) - nll
    assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(len(gap)) + 1e-3
    np.testing.assert_allclose(vb.bits_per_dim, vb.total / (2 * np.log(2)), rtol=1e-6)
    # the posterior variance is wrong for this data, so its bound must be looser
    vb_post = dif.variational_bound(jax.random.key(4), fn, schedule, x0, variance="posterior")
    assert float(vb_post.total.mean()) > float(vb.total.mean()) + 0.5


def test_samplers_compile_once_across_keys_and_params(schedule):
    def eps_fn(params, x_t, t, mask, cond):
        return params["scale"] * x_t

    traced = chex.assert_max_traces(eps_fn, n=2)  # one trace for ddpm, one for ddim
    for i in range(3):
        fn = Partial(traced, {"scale": jnp.float32(0.1 * i)})
        dif.ddpm_sample(jax.random.key(i), fn, schedule, (8, 2))
        dif.ddim_sample(jax.random.key(i), fn, schedule, (8, 2), num_steps=10, eta=0.1 * i)
    chex.clear_trace_counter()


def test_trajectory_and_masks(schedule):
    small = dif.linear_schedule(100, 1e-3, 0.2)
    fn = Partial(_optimal_eps, small, 0.25)
    x, traj = dif.ddpm_sample(jax.random.key(5), fn, small, (3, 2), trajectory_stride=25)
    assert traj.shape == (4, 3, 2)
    np.testing.assert_array_equal(traj[-1], x)
    with pytest.raises(ValueError, match="divide"):
        dif.ddpm_sample(jax.random.key(5), fn, small, (3, 2), trajectory_stride=30)

    def per_residue(x_t, t, mask, cond):
        return 0.1 * x_t

    mask = jnp.array([[True, True, False], [True, False, False]])
    out = dif.ddpm_sample(jax.random.key(6), per_residue, small, (2, 3, 3), mask=mask)
    np.testing.assert_array_equal(out[~mask], 0.0)
    assert float(jnp.abs(out[mask]).min()) > 0


def test_inpainting_keeps_known_part_and_samples_the_rest(schedule):
    fn = Partial(_optimal_eps, schedule, 0.25)
    known = jnp.broadcast_to(jnp.array([3.0, 0.0]), (N, 2))
    known_mask = jnp.array([True, False])
    for sample in (
        lambda: dif.ddpm_sample(
            jax.random.key(7), fn, schedule, (N, 2), known=known, known_mask=known_mask
        ),
        lambda: dif.ddim_sample(
            jax.random.key(7), fn, schedule, (N, 2), 250, known=known, known_mask=known_mask
        ),
    ):
        x = np.asarray(sample())
        np.testing.assert_array_equal(x[:, 0], 3.0)
        assert abs(x[:, 1].mean() - float(MEAN[1])) < 5 * np.sqrt(0.25 / N)
        assert abs(x[:, 1].var() - 0.25) < 5 * 0.25 * np.sqrt(2 / N)


def test_classifier_free_guidance_blends(schedule):
    def eps_fn(x_t, t, mask, cond):
        return x_t * cond[:, None].astype(jnp.float32)

    x = jnp.ones((4, 2))
    t = jnp.zeros(4, jnp.int32)
    cond = jnp.full((4,), 3)
    for scale, expected in [(0.0, 0.0), (1.0, 3.0), (2.0, 6.0)]:
        guided = dif.classifier_free_guidance(eps_fn, scale, null_cond=0)
        np.testing.assert_allclose(guided(x, t, None, cond), expected)


def test_classifier_guidance_shifts_eps_by_scaled_gradient(schedule):
    target_means = jnp.array([[2.0, 0.0], [-2.0, 0.0]])

    def log_prob(x_t, t, mask, y):
        return -0.5 * jnp.sum(jnp.square(x_t - target_means[y]), -1)

    def eps_fn(x_t, t, mask, cond):
        return jnp.zeros_like(x_t)

    x = jnp.zeros((2, 2))
    t = jnp.array([10, 500])
    guided = dif.classifier_guidance(eps_fn, log_prob, schedule, jnp.array([0, 1]), scale=1.5)
    expected = -1.5 * schedule.sqrt_one_minus_alpha_bars[t][:, None] * target_means
    np.testing.assert_allclose(guided(x, t, None, None), expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 7, 3), (1, 5, 3), (2, 3, 4, 5), (5,), (6, 2)])
def test_standard_normal_is_jax_random_normal(shape):
    """The flat draw (fast on XLA:CPU for [B, L, 3]) gives exactly jax.random.normal's values, so
    samplers and losses keep their random streams."""
    for impl in ("threefry2x32", "rbg"):
        key = jax.random.key(11, impl=impl)
        want = jax.random.normal(key, shape, jnp.float32)
        got = dif.standard_normal(key, shape)
        assert got.shape == want.shape and got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _estimate_plus(schedule, step, x_t, t, mask, cond, self_cond=None):
    """A self-conditioned 'network' whose x0 estimate is the one it is given plus ``step``."""
    return dif.eps_from_x0(schedule, x_t, t, self_cond + step)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_self_conditioning_feeds_each_step_the_previous_estimate(sampler):
    # Each step's x0_hat is the previous one + 0.25, starting from zeros, and the last step returns its
    # x0_hat: the output is (number of steps) * 0.25. Feeding zeros every time would give 0.25.
    schedule = dif.linear_schedule(10)
    fn = Partial(_estimate_plus, schedule, 0.25)
    if sampler == "ddpm":
        x = dif.ddpm_sample(jax.random.key(0), fn, schedule, (3, 2), self_condition=True)
        steps = 10
    else:
        x = dif.ddim_sample(jax.random.key(0), fn, schedule, (3, 2), 4, self_condition=True)
        steps = 4
    np.testing.assert_allclose(x, steps * 0.25, atol=1e-4)
