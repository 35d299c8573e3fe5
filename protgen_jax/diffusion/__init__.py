"""Gaussian diffusion: schedules, the forward process, losses and bounds, samplers and guidance; its
wrapped (torus) variant for angles (:mod:`.torus`).

Pure functions; networks enter as ``denoise_fn(x_t, t, mask, cond)`` callables. See the submodules for the
equations.
"""

from protgen_jax.diffusion.forward import (
    eps_from_score,
    eps_from_v,
    eps_from_x0,
    q_mean_variance,
    q_posterior,
    q_sample,
    regression_target,
    score_from_eps,
    to_x0_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from protgen_jax.diffusion.guidance import classifier_free_guidance, classifier_guidance
from protgen_jax.diffusion.losses import (
    VariationalBound,
    diffusion_loss,
    noise_mse,
    normal_kl,
    self_conditioned,
    standard_normal,
    variational_bound,
)
from protgen_jax.diffusion.samplers import as_partial, ddim_sample, ddim_timesteps, ddpm_sample
from protgen_jax.diffusion.schedules import (
    Schedule,
    cosine_schedule,
    get_schedule,
    linear_schedule,
    schedule_from_betas,
    sqrt_snr,
    with_noise_level,
)
from protgen_jax.diffusion.torus import (
    torus_ddpm_sample,
    wrap,
    wrapped_noise_loss,
    wrapped_q_sample,
)

__all__ = [
    "Schedule",
    "VariationalBound",
    "as_partial",
    "classifier_free_guidance",
    "classifier_guidance",
    "cosine_schedule",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "diffusion_loss",
    "eps_from_score",
    "eps_from_v",
    "eps_from_x0",
    "get_schedule",
    "linear_schedule",
    "noise_mse",
    "normal_kl",
    "q_mean_variance",
    "q_posterior",
    "q_sample",
    "regression_target",
    "schedule_from_betas",
    "score_from_eps",
    "self_conditioned",
    "sqrt_snr",
    "standard_normal",
    "to_x0_eps",
    "torus_ddpm_sample",
    "v_from_x0_eps",
    "variational_bound",
    "with_noise_level",
    "wrap",
    "wrapped_noise_loss",
    "wrapped_q_sample",
    "x0_from_eps",
    "x0_from_v",
]
