"""Discrete sequence diffusion: D3PM transitions, losses and sampler; OADM masking, loss and sampler.

Pure math over int32 token arrays [B, L] (tokens of ``protgen_jax.alphabet``); models enter
as ``logits_fn(x_t, t, mask, cond) -> logits [B, L, K]`` callables. No flax, no orbax.
"""

from protgen_jax.discrete.d3pm import (
    DiscreteSchedule,
    absorbing_betas,
    absorbing_transitions,
    cosine_betas,
    d3pm_sample,
    hybrid_loss,
    prior_kl,
    q_posterior_logits,
    q_probs,
    q_sample,
    q_sample_key,
    reverse_logits,
    schedule_from_onestep,
    uniform_transitions,
    vlb_nll,
)
from protgen_jax.discrete.oadm import (
    oadm_corrupt,
    oadm_log_likelihood,
    oadm_loss,
    oadm_mask,
    oadm_sample,
)

__all__ = [
    "DiscreteSchedule",
    "absorbing_betas",
    "absorbing_transitions",
    "cosine_betas",
    "d3pm_sample",
    "hybrid_loss",
    "oadm_corrupt",
    "oadm_log_likelihood",
    "oadm_loss",
    "oadm_mask",
    "oadm_sample",
    "prior_kl",
    "q_posterior_logits",
    "q_probs",
    "q_sample",
    "q_sample_key",
    "reverse_logits",
    "schedule_from_onestep",
    "uniform_transitions",
    "vlb_nll",
]
