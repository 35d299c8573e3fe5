"""Zero-centre-of-mass Gaussian noise for coordinate diffusion (JAX, jit-friendly).

Training structures are centred on the masked centre of mass, so their translation is fixed. Drawing the
diffusion noise in the same subspace (Hoogeboom et al. 2022, "Equivariant diffusion for molecule generation
in 3D", section 3.2) keeps every noisy structure centred too, and a denoiser never has to learn or predict a
translation. `zero_com_noise` is the `noise_transform` hook of `protgen_jax.diffusion.diffusion_loss`,
`ddpm_sample` and `ddim_sample`; pass it as `jax.tree_util.Partial(zero_com_noise)`. A network that
predicts zero-mean noise is completed by `centred_denoise_fn` for inputs that are not centred.
"""

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

__all__ = ["centred_denoise_fn", "masked_center", "zero_com_noise"]


def masked_center(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Subtract the masked mean over residues and zero the padding.

    x'_bl = m_bl (x_bl - sum_k m_bk x_bk / max(sum_k m_bk, 1)).

    Args:
      x: [B, L, 3] coordinates or noise.
      mask: [B, L] bool, True where a residue exists (None = all residues).

    Returns:
      [B, L, 3] float32 with sum_l m_bl x'_bl = 0 for every b.
    """
    chex.assert_rank(x, 3)
    if mask is None:
        mask = jnp.ones(x.shape[:2], bool)
    chex.assert_shape(mask, x.shape[:2])
    weight = mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(jnp.sum(weight, axis=1, keepdims=True), 1.0)
    mean = jnp.sum(x.astype(jnp.float32) * weight, axis=1, keepdims=True) / count
    return (x.astype(jnp.float32) - mean) * weight


def zero_com_noise(noise: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Project standard Gaussian noise onto the zero-centre-of-mass subspace of the masked residues.

    eps' = masked_center(eps, mask). If eps_bl ~ N(0, I_3) i.i.d. over the n_b real residues, eps' is the
    standard Gaussian of the 3 (n_b - 1)-dimensional subspace {sum_l eps'_bl = 0}: each coordinate has
    variance 1 - 1 / n_b.

    Args:
      noise: [B, L, 3] standard normal draws.
      mask: [B, L] bool (None = all residues real).

    Returns:
      [B, L, 3] float32 noise, zero at padded residues, with zero masked mean.
    """
    return masked_center(noise, mask)


def _centred_eps(
    denoise_fn: Callable[..., jax.Array],
    sqrt_one_minus_alpha_bars: jax.Array,
    x_t: jax.Array,
    t: jax.Array,
    mask: jax.Array | None,
    cond: Any,
    **kwargs: Any,
) -> jax.Array:
    eps = denoise_fn(x_t, t, mask, cond, **kwargs)
    com = x_t.astype(jnp.float32) - masked_center(x_t, mask)  # the masked mean, per residue
    if mask is not None:
        com = com * mask[..., None].astype(jnp.float32)
    return eps + com / sqrt_one_minus_alpha_bars[t].reshape(-1, 1, 1)


def centred_denoise_fn(denoise_fn: Callable[..., jax.Array], schedule: Any) -> Partial:
    """Complete a zero-mean eps prediction with the exact centre-of-mass part for centred data.

    For data x_0 with zero masked centre of mass, x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps has centre of
    mass c_t = sqrt(1 - ab_t) mean(eps), so the optimal prediction of the mean of eps is
    c_t / sqrt(1 - ab_t):

        eps_hat(x_t) = network(x_t) + c_t / sqrt(1 - ab_t)     (c_t on every real residue)

    This adds zero when x_t is centred (unconditional sampling from zero-COM noise); it pins the centre of
    mass of x0_hat to the origin when x_t is not centred (motif replacement injects a non-zero c_t, which
    the posterior mean would otherwise amplify by 1 / sqrt(alpha_t) every step); and it makes
    `protgen_jax.diffusion.variational_bound`, which draws full-rank noise, exact on the three
    centre-of-mass directions.

    Args:
      denoise_fn: `(x_t [B, L, 3], t [B], mask [B, L] | None, cond) -> eps [B, L, 3]` with zero masked
        mean (e.g. `Partial(BackboneDenoiser.apply, params)`).
      schedule: a `protgen_jax.diffusion.Schedule` (its `sqrt_one_minus_alpha_bars` [T] is used).

    Returns:
      A `Partial` with the same signature (a pytree: the sampler does not recompile for new params);
      other keywords (`self_cond`) are passed through.
    """
    fn = denoise_fn if isinstance(denoise_fn, Partial) else Partial(denoise_fn)
    return Partial(_centred_eps, fn, schedule.sqrt_one_minus_alpha_bars)
