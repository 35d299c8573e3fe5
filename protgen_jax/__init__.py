"""protgen_jax: protein generative models in JAX/Flax.

Functional primitives live in :mod:`protgen_jax.vae` (ELBO, KL, reparameterization, IWAE),
:mod:`protgen_jax.diffusion` (schedules, q_sample, losses, DDPM/DDIM scans, guidance) and
:mod:`protgen_jax.discrete` (D3PM, OADM); Flax networks in :mod:`protgen_jax.nn`; training plumbing in
:mod:`protgen_jax.train` and :mod:`protgen_jax.checkpoint`; model-family pipelines in
:mod:`protgen_jax.recipes`; the command line in :mod:`protgen_jax.cli`.
"""

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'protgen_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
