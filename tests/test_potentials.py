"""Structure potentials (clash, Rg) and the torus sampler's energy guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax.diffusion import get_schedule
from protgen_jax.diffusion.torus import torus_ddpm_sample, torus_energy_guidance
from protgen_jax.structure.internal import IDEAL_ANGLES, backbone_from_internal
from protgen_jax.structure.potentials import (
    angle_energy,
    clash_energy,
    rg_energy,
    rg_target,
)


def _line(n, spacing=3.8):
    return jnp.stack([jnp.arange(n) * spacing, jnp.zeros(n), jnp.zeros(n)], -1)[None]


def test_clash_energy_by_hand_and_its_gradient_pushes_the_pair_apart():
    ca = _line(6)  # every |i - j| >= 3 pair is >= 11.4 Å apart
    assert float(clash_energy(ca, margin=4.0)[0]) == 0.0
    # move residue 5 onto 1.0 Å from residue 0 (x = (1, 0, 0)); its other pairs: 1-5 and 2-5 (|i-j| >= 3)
    ca = ca.at[0, 5].set(jnp.array([1.0, 0.0, 0.0]))
    d05, d15, d25 = 1.0, 2.8, 6.6  # residues 1 and 2 sit at x = 3.8 and 7.6
    expected = (4.0 - d05) ** 2 + (4.0 - d15) ** 2 + 0.0 * d25
    np.testing.assert_allclose(clash_energy(ca, margin=4.0), [expected], rtol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(clash_energy(x, margin=4.0)))(ca)[0]
    # dE/dx_5 = -2 (4 - d05) (x5 - x0)/d05 - 2 (4 - d15) (x5 - x1)/d15 (x5 - x1 points along -x)
    np.testing.assert_allclose(grad[5], [-2 * 3.0 + 2 * 1.2, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(grad[0, 0], 2 * 3.0, atol=1e-4)  # residue 0 is pushed to -x
    step = ca - 0.01 * grad[None]
    assert float(jnp.linalg.norm(step[0, 5] - step[0, 0])) > 1.0  # descent separates the pair
    # masking residue 5 (padding) removes every term
    mask = jnp.arange(6)[None] < 5
    assert float(clash_energy(ca, mask, margin=4.0)[0]) == 0.0


def test_rg_energy_by_hand():
    ca = _line(10, 4.0)  # Rg of 10 equally spaced points: 4 * sqrt((n^2 - 1) / 12)
    rg = 4.0 * np.sqrt(99 / 12)
    target = float(rg_target(10))
    np.testing.assert_allclose(rg_energy(ca)[0], (rg - target) ** 2, rtol=1e-4)
    assert float(rg_energy(ca, prefactor=10.0)[0]) == 0.0  # below the target: no penalty
    padded = jnp.concatenate([ca, jnp.full((1, 5, 3), 100.0)], axis=1)
    mask = jnp.arange(15)[None] < 10
    np.testing.assert_allclose(rg_energy(padded, mask), rg_energy(ca), rtol=1e-5)


def test_angle_energy_uses_nerf_and_holds_the_fixed_channels():
    rng = np.random.default_rng(0)
    angles = jnp.asarray(np.tile(IDEAL_ANGLES, (1, 12, 1)), jnp.float32)
    angles = angles + 0.3 * jnp.asarray(rng.normal(size=angles.shape), jnp.float32)
    offset = jnp.asarray(rng.normal(size=6), jnp.float32)
    channels = np.array([True, True, False, False, False, False])
    fn = angle_energy(offset, 1.0, 0.5, channels)
    ca = backbone_from_internal(angles + offset[None, None])[..., 1, :]
    expected = clash_energy(ca) + 0.5 * rg_energy(ca)
    np.testing.assert_allclose(fn(angles, None), expected, rtol=1e-5)
    grad = jax.grad(lambda a: jnp.sum(fn(a, None)))(angles)
    assert float(jnp.abs(grad[..., 2:]).max()) == 0.0
    assert float(jnp.abs(grad[..., :2]).max()) > 0.0


# ---------------------------------------------------------------- the guided torus sampler
SHAPE = (6, 16, 6)


def _random_denoiser():
    """A fixed random 'network': eps = tanh(x W + b) per residue (untrained, but a function of x)."""
    k1, k2 = jax.random.split(jax.random.key(7))
    w = 0.5 * jax.random.normal(k1, (6, 6))
    b = 0.1 * jax.random.normal(k2, (6,))

    def fn(x_t, t, mask, cond):
        return jnp.tanh(x_t @ w + b[None, None])

    return fn


def _clash_of(angles):
    return clash_energy(backbone_from_internal(angles)[..., 1, :])


@pytest.fixture(scope="module")
def tiny():
    schedule = get_schedule("cosine", 30)
    offset = jnp.asarray(IDEAL_ANGLES, jnp.float32)  # centred angles, as a FoldingDiff run's
    mask = jnp.arange(SHAPE[1])[None] < jnp.array([[16], [16], [16], [12], [16], [14]])
    return schedule, offset, mask


def test_guidance_with_scale_zero_is_the_unguided_sampler(tiny):
    """Scale 0 returns eps itself (bit for bit, one call); a whole chain of the guided program matches
    the unguided one up to float32 rounding (the two programs are fused differently by XLA)."""
    schedule, offset, mask = tiny
    fn = _random_denoiser()
    guided = torus_energy_guidance(fn, angle_energy(offset, 1.0, 1.0), schedule, scale=0.0)
    x = jax.random.uniform(jax.random.key(5), SHAPE, minval=-3, maxval=3)
    t = jnp.array([0, 3, 10, 20, 28, 29])
    np.testing.assert_array_equal(
        np.asarray(guided(x, t, mask, None)), np.asarray(fn(x, t, mask, None))
    )
    plain = torus_ddpm_sample(jax.random.key(0), fn, schedule, SHAPE, mask=mask)
    again = torus_ddpm_sample(jax.random.key(0), guided, schedule, SHAPE, mask=mask)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(again), atol=1e-4)
    on = torus_energy_guidance(fn, angle_energy(offset, 1.0, 1.0), schedule, scale=1.0)
    moved = torus_ddpm_sample(jax.random.key(0), on, schedule, SHAPE, mask=mask)
    assert float(jnp.abs(moved - plain).max()) > 1e-3


def test_clash_guidance_lowers_the_clash_energy_of_samples(tiny):
    """Against the sign: with eps + shift replaced by eps - shift this test fails (energy goes up)."""
    schedule, offset, mask = tiny
    fn = _random_denoiser()
    energy = angle_energy(offset, 1.0, 0.0, np.array([True, True, False, False, False, False]))
    key = jax.random.key(1)
    base = torus_ddpm_sample(key, fn, schedule, SHAPE, mask=mask)
    guided_fn = torus_energy_guidance(fn, energy, schedule, scale=5.0, max_shift=3.0)
    guided = torus_ddpm_sample(key, guided_fn, schedule, SHAPE, mask=mask)
    e0 = energy(base, mask)
    e1 = energy(guided, mask)
    assert float(jnp.sum(e0)) > 1.0  # the random denoiser does make clashes
    assert float(jnp.sum(e1)) < 0.5 * float(jnp.sum(e0)), (e0, e1)
    assert float(jnp.abs(guided[3, 12:]).max()) == 0.0  # padding untouched


def test_guidance_is_off_before_guide_from(tiny):
    schedule, offset, mask = tiny
    fn = _random_denoiser()
    x = jax.random.uniform(jax.random.key(2), SHAPE, minval=-3, maxval=3)
    guided = torus_energy_guidance(
        fn, angle_energy(offset, 1.0, 1.0), schedule, scale=1.0, guide_from=0.5, max_shift=0.25
    )
    t = jnp.array([29, 29, 14, 14, 0, 20])  # guided iff t <= round(0.5 * 29) = 14
    eps, out = fn(x, t, mask, None), guided(x, t, mask, None)
    changed = np.asarray(jnp.abs(out - eps).max(axis=(1, 2)) > 0)
    assert changed.tolist() == [False, False, True, True, True, False]
    shift = jnp.linalg.norm(out - eps, axis=-1)
    assert float(shift.max()) <= 0.25 + 1e-5  # the per-residue clip
    assert float(shift[3, 12:].max()) == 0.0  # padding: no shift
    with pytest.raises(ValueError):
        torus_energy_guidance(fn, angle_energy(offset, 1.0, 1.0), schedule, guide_from=1.5)
