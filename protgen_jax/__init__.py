"""protgen_jax: protein generative models in JAX/Flax.

Functional primitives live in :mod:`protgen_jax.vae` (ELBO, KL, reparameterization, IWAE),
:mod:`protgen_jax.diffusion` (schedules, q_sample, losses, DDPM/DDIM scans, guidance) and
:mod:`protgen_jax.discrete` (D3PM, OADM); Flax networks in :mod:`protgen_jax.nn`; training plumbing in
:mod:`protgen_jax.train` and :mod:`protgen_jax.checkpoint`; model-family pipelines in
:mod:`protgen_jax.recipes`; the command line in :mod:`protgen_jax.cli`.
"""

from protgen_jax.diffusion import (
    cosine_schedule,
    ddim_sample,
    ddpm_sample,
    linear_schedule,
    noise_mse,
    q_sample,
)
from protgen_jax.vae import gaussian_kl, negative_elbo, reparameterize

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cosine_schedule",
    "ddim_sample",
    "ddpm_sample",
    "gaussian_kl",
    "linear_schedule",
    "negative_elbo",
    "noise_mse",
    "q_sample",
    "reparameterize",
]
