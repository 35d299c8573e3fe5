"""protgen_jax: protein generative models in JAX/Flax.

Functional primitives live in :mod:`protgen_jax.vae` (ELBO, KL, reparameterization, IWAE),
:mod:`protgen_jax.diffusion` (schedules, q_sample, losses, DDPM/DDIM scans, guidance) and
:mod:`protgen_jax.discrete` (D3PM, OADM); Flax networks in :mod:`protgen_jax.nn`; training plumbing in
:mod:`protgen_jax.train` and :mod:`protgen_jax.checkpoint`; model-family pipelines in
:mod:`protgen_jax.recipes`; the command line in :mod:`protgen_jax.cli`.
"""

from protgen_jax._lazy import lazy_attributes

__version__ = "0.1.0"

# Imported on first use (PEP 562), so `import protgen_jax.data.registry` or `protgen data list` does not
# pay for importing JAX.
_LAZY = {
    "cosine_schedule": "protgen_jax.diffusion",
    "ddim_sample": "protgen_jax.diffusion",
    "ddpm_sample": "protgen_jax.diffusion",
    "linear_schedule": "protgen_jax.diffusion",
    "noise_mse": "protgen_jax.diffusion",
    "q_sample": "protgen_jax.diffusion",
    "gaussian_kl": "protgen_jax.vae",
    "negative_elbo": "protgen_jax.vae",
    "reparameterize": "protgen_jax.vae",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, extra=["__version__"])
__all__ = ["__version__", *sorted(_LAZY)]
