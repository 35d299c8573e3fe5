"""The latent diffusion model: a Gaussian DDPM on standardised VAE latent codes, and its samplers.

Latents ``z [N, D]`` enter the diffusion standardised per dimension, ``x = (z - m) / s`` (``m, s``
``[D]`` from the training codes, :func:`standardise`), so the forward process ends near ``N(0, I)``
whatever the VAE's scale. The network is ``protgen_jax.nn.MLPDenoiser`` (time + family embedding,
the null family ``F`` for classifier-free guidance); the math is ``protgen_jax.diffusion``:

- loss: ``L = E_{t, eps} ||eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t, y)||^2 / D``
  (``diffusion_loss``, ``t ~ U{0..T-1}``), with ``y`` replaced by ``F`` at rate ``cfg_drop`` in the
  batches;
- sampling: ``ddim_sample`` (``steps`` > 0, eta 0) or ``ddpm_sample`` (``steps = 0``), ``x0_hat``
  clipped to ``[-clip_x0, clip_x0]`` (standardised units), with
  classifier-free guidance ``eps_null + w (eps_y - eps_null)`` or classifier guidance
  ``eps_null - s sqrt(1 - ab_t) grad_x log p_phi(y | x_t, t)`` (``diffusion.guidance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from protgen_jax.diffusion import (
    Schedule,
    classifier_free_guidance,
    classifier_guidance,
    ddim_sample,
    ddpm_sample,
    diffusion_loss,
)
from protgen_jax.nn.mlp import MLPDenoiser


def standardise(z: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``x = (z - m) / s``: ``z [N, D]``, ``m, s [D]`` -> ``[N, D]``."""
    return (np.asarray(z, np.float32) - mean) / std


def unstandardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of :func:`standardise`: ``z = m + s x``."""
    return np.asarray(x, np.float32) * std + mean


def latent_moments(
    mu: np.ndarray, logvar: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation ``[D]`` of the codes the diffusion is trained on.

    ``source = "mean"``: the encoder means, ``m = mean_n mu_n``, ``s^2 = var_n mu_n``.
    ``source = "sample"``: the aggregate posterior ``q(z) = (1/N) sum_n N(mu_n, diag e^logvar_n)``,
    ``m = mean_n mu_n``, ``s^2 = var_n mu_n + mean_n e^logvar_n`` (law of total variance).
    """
    mu = np.asarray(mu, np.float64)
    var = mu.var(0)
    if source == "sample":
        var = var + np.exp(np.asarray(logvar, np.float64)).mean(0)
    return mu.mean(0).astype(np.float32), np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)


def _log_prob_of_class(apply_fn, x_t, t, mask, y):
    """``log softmax(classifier(x_t, t))[b, y_b]`` -> ``[B]`` (the ``log_prob_fn`` of guidance)."""
    del mask
    logits = apply_fn(x_t, t)
    return jnp.take_along_axis(jax.nn.log_softmax(logits, -1), y[:, None].astype(jnp.int32), -1)[
        :, 0
    ]


def classifier_log_prob_fn(module: Any, params: Any) -> Partial:
    """``log_prob_fn(x_t [B, D], t [B], mask, y [B]) -> [B]`` of a noise-conditioned classifier
    ``module.apply(params, x_t, t) -> logits [B, F]`` (a ``Partial``: no recompiles for new params)."""
    return Partial(_log_prob_of_class, Partial(module.apply, params))


@dataclass(frozen=True, eq=False)
class LatentModel:
    """An ``MLPDenoiser`` on ``latent_dim``-wide standardised codes with ``num_families`` real labels
    (label ``num_families`` = the null family) and a Gaussian ``schedule``."""

    module: MLPDenoiser
    schedule: Schedule
    latent_dim: int
    num_families: int
    clip_x0: float | None = None

    @property
    def null_label(self) -> int:
        """The null family label (classifier-free guidance; unconditional sampling)."""
        return self.num_families

    def init(self, key: jax.Array) -> Any:
        x = jnp.zeros((1, self.latent_dim), jnp.float32)
        t = jnp.zeros((1,), jnp.int32)
        cond = jnp.full((1,), self.null_label, jnp.int32) if self.num_families else None
        return self.module.init(key, x, t, None, cond)

    def denoise_fn(self, params: Any) -> Partial:
        """``eps_theta(x_t, t, mask, y)`` as a ``Partial`` (params are traced data)."""
        if self.num_families:
            return Partial(self.module.apply, params)
        return Partial(_drop_cond, Partial(self.module.apply, params))

    def loss_fn(self) -> Any:
        """``loss(params, batch, key) -> (mean noise MSE, {})``; batch: ``x0 [B, D]``, ``cond [B]``."""

        def loss(params, batch, key):
            per_example = diffusion_loss(
                key, self.denoise_fn(params), self.schedule, batch["x0"], cond=batch["cond"]
            )
            return jnp.mean(per_example), {}

        return loss

    def sample(
        self,
        params: Any,
        key: jax.Array,
        labels: jax.Array,
        *,
        steps: int = 50,
        guidance: float = 1.0,
        log_prob_fn: Any = None,
        classifier_scale: float = 0.0,
    ) -> jax.Array:
        """Standardised codes ``x0 [B, D]`` for family labels ``labels [B]`` (``null_label`` =
        unconditional).

        ``guidance`` w (classifier-free): ``w = 1`` samples with ``labels``, ``w = 0`` with the null
        label, other ``w`` blend ``eps_null + w (eps_y - eps_null)``. With ``log_prob_fn`` (a noisy
        classifier, :func:`classifier_log_prob_fn`) the denoiser runs with the null label and its
        eps is shifted by ``- s sqrt(1 - ab_t) grad log p(labels | x_t)``, ``s = classifier_scale``.
        ``steps`` > 0: DDIM with that many steps (eta 0); 0: ancestral DDPM over all ``T`` steps.
        ``x0_hat`` is clipped to ``[-clip_x0, clip_x0]`` at every step (when set): at ``t = T - 1`` of
        the cosine schedule ``sqrt(ab_t)`` is ~5e-5, so ``x0_hat = (x_t - sqrt(1 - ab_t) eps_hat) /
        sqrt(ab_t)`` multiplies any error of ``eps_hat`` by ~2e4 and an unclipped DDIM step diverges.
        """
        labels = jnp.asarray(labels, jnp.int32)
        null = jnp.full_like(labels, self.null_label)
        fn = self.denoise_fn(params)
        if log_prob_fn is not None:
            fn = classifier_guidance(fn, log_prob_fn, self.schedule, labels, classifier_scale)
            cond = null
        elif guidance == 0.0:
            cond = null
        elif guidance == 1.0:
            cond = labels
        else:
            fn, cond = classifier_free_guidance(fn, guidance, jnp.int32(self.null_label)), labels
        shape = (int(labels.shape[0]), self.latent_dim)
        clip = self.clip_x0
        if steps > 0:
            return ddim_sample(key, fn, self.schedule, shape, int(steps), cond=cond, clip_x0=clip)
        return ddpm_sample(key, fn, self.schedule, shape, cond=cond, clip_x0=clip)


def _drop_cond(apply_fn, x_t, t, mask, cond):
    """An unconditional network behind the conditional signature (the label is ignored)."""
    return apply_fn(x_t, t, mask, None)
