"""The three sequence-diffusion methods behind one network: losses, likelihood bounds and generation.

:class:`SeqDiffModel` binds a :class:`~protgen_jax.nn.sequence_denoiser.SequenceDenoiser` to the math of
``protgen_jax.discrete`` (OADM, D3PM) or ``protgen_jax.discrete.relax``. The network is passed to the
math as ``logits_fn = jax.tree_util.Partial(module.apply, params)``, so new params reuse the compiled
samplers. Tokens are ``[B, L]`` int32 (``protgen_jax.discrete.tokens``), masks ``[B, L]`` bool, family
labels ``cond [B]`` int32 with ``num_families`` as the null class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from protgen_jax.data.sequences import bucket_index
from protgen_jax.diffusion import Schedule, classifier_free_guidance, get_schedule
from protgen_jax.discrete import (
    DiscreteSchedule,
    absorbing_betas,
    absorbing_transitions,
    cosine_betas,
    d3pm_sample,
    hybrid_loss,
    oadm_corrupt,
    oadm_log_likelihood,
    oadm_loss,
    oadm_mask,
    oadm_sample,
    q_sample_key,
    uniform_transitions,
    vlb_nll,
)
from protgen_jax.discrete import tokens as vocab
from protgen_jax.discrete.relax import relax_loss, relax_nll_bound, relax_sample, token_embeddings
from protgen_jax.nn.sequence_denoiser import SequenceDenoiser

_NEG_LOGIT = -1e9  # the MASK logit of absorbing D3PM: x0 is never MASK


def _append_mask_logit(logits_fn, x_t, t, mask, cond):
    """``[B, L, 20]`` amino-acid logits -> ``[B, L, 21]`` with the MASK class at -1e9."""
    logits = logits_fn(x_t, t, mask, cond)
    pad = jnp.full(logits.shape[:-1] + (1,), _NEG_LOGIT, logits.dtype)
    return jnp.concatenate([logits, pad], axis=-1)


def _tempered(logits_fn, inv_temperature, x_t, t, mask, cond):
    return logits_fn(x_t, t, mask, cond) * inv_temperature


@dataclass(frozen=True, eq=False)
class SeqDiffModel:
    """One method (``"oadm"``, ``"d3pm"`` or ``"relax"``) on a ``SequenceDenoiser``.

    ``d3pm_schedule`` is set for D3PM (K = 20 uniform or 21 absorbing); ``gauss_schedule`` and
    ``embeddings [20, D]`` for the relaxation.
    """

    method: str
    module: SequenceDenoiser
    num_families: int
    init_length: int = 32
    hybrid_lambda: float = 0.01
    mse_weight: float = 1.0
    clamp: bool = True
    eval_orders: int = 1
    d3pm_schedule: DiscreteSchedule | None = None
    gauss_schedule: Schedule | None = None
    embeddings: jax.Array | None = None

    @property
    def null_label(self) -> int:
        """The null family label (classifier-free guidance)."""
        return self.num_families

    def init(self, key: jax.Array) -> Any:
        """Network params for a ``[1, init_length]`` input."""
        length = self.init_length
        if self.method == "relax":
            x = jnp.zeros((1, length, self.embeddings.shape[1]), jnp.float32)
        else:
            x = jnp.zeros((1, length), jnp.int32)
        t = jnp.zeros((1,), jnp.int32)
        cond = jnp.full((1,), self.null_label, jnp.int32)
        return self.module.init(key, x, t, jnp.ones((1, length), bool), cond)

    def _k_logits(self, fn: Callable) -> Callable:
        """Add the MASK column for absorbing D3PM (its K is 21); identity otherwise."""
        if self.d3pm_schedule is not None and self.d3pm_schedule.num_classes == vocab.K_AA + 1:
            return Partial(_append_mask_logit, fn)
        return fn

    def logits_fn(self, params: Any) -> Partial:
        """``Partial(module.apply, params)`` with the method's K (a pytree; no recompiles)."""
        return self._k_logits(Partial(self.module.apply, params))

    def loss_fn(self, train: bool) -> Callable:
        """``loss(params, batch, key) -> (per-token loss, aux)``; batch = tokens, mask, cond.

        OADM: ``sum_b (len_b / t_b) sum_masked CE / sum_b len_b`` (aux ``bound_per_token``, the same).
        D3PM: ``sum_b (L_vb(t_b) + lambda L_ce) / tokens``; aux ``bound_per_token = T sum_b L_vb / tokens``
        (unbiased for the bound without its prior term) and ``ce_per_token``. Relax: ``(CE + w MSE) /
        tokens``; aux ``ce_per_token`` and ``mse_per_token``.
        """
        dropout = train and self.module.dropout_rate > 0

        def loss(params, batch, key):
            key, dropout_key = jax.random.split(key)
            kwargs = {"deterministic": False, "rngs": {"dropout": dropout_key}} if dropout else {}

            def net(x_t, t, mask, cond):
                return self.module.apply(params, x_t, t, mask, cond, **kwargs)

            x0, mask, cond = batch["tokens"], batch["mask"], batch["cond"]
            num_tokens = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
            if self.method == "oadm":
                masked, num_masked = oadm_mask(key, mask)
                logits = net(oadm_corrupt(x0, masked, mask), num_masked, mask, cond)
                per_example, _ = oadm_loss(logits, x0, masked, mask)
                value = jnp.sum(per_example) / num_tokens
                return value, {"bound_per_token": value}
            if self.method == "d3pm":
                schedule = self.d3pm_schedule
                t_key, q_key = jax.random.split(key)
                t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
                x_t = q_sample_key(q_key, schedule, jnp.where(mask, x0, 0), t)
                per_example, aux = hybrid_loss(
                    schedule, self._k_logits(net), x0, t, x_t, mask, self.hybrid_lambda, cond
                )
                return jnp.sum(per_example) / num_tokens, {
                    "bound_per_token": schedule.num_steps * jnp.sum(aux["vb"]) / num_tokens,
                    "ce_per_token": jnp.sum(aux["ce"]) / num_tokens,
                }
            per_example, aux = relax_loss(
                key, net, self.gauss_schedule, self.embeddings, x0, mask, cond, self.mse_weight
            )
            return jnp.sum(per_example) / num_tokens, {
                "ce_per_token": jnp.sum(aux["ce"]) / num_tokens,
                "mse_per_token": jnp.sum(aux["mse"]) / num_tokens,
            }

        return loss

    def nll(self, params: Any, key: jax.Array, x0: jax.Array, mask: jax.Array, cond: jax.Array):
        """Per-sequence upper bound on ``-log p(x0 | family)`` in nats ``[B]``.

        OADM: minus the exact-order log-likelihood averaged over ``eval_orders`` random orders; D3PM:
        the full variational bound (T terms); relax: the embedding-diffusion bound.
        """
        fn = self.logits_fn(params)
        if self.method == "oadm":
            return -oadm_log_likelihood(key, fn, x0, mask, self.eval_orders, cond)
        if self.method == "d3pm":
            return vlb_nll(key, self.d3pm_schedule, fn, jnp.where(mask, x0, 0), mask, cond)
        return relax_nll_bound(
            key, fn, self.gauss_schedule, self.embeddings, jnp.where(mask, x0, 0), mask, cond
        )

    def generate(
        self,
        params: Any,
        key: jax.Array,
        shape: tuple[int, int],
        mask: jax.Array,
        cond: jax.Array,
        fixed_tokens: jax.Array | None = None,
        fixed_mask: jax.Array | None = None,
        guidance: float = 1.0,
        temperature: float = 1.0,
    ) -> jax.Array:
        """Sample tokens ``[B, L]`` (PAD at padding) with the method's sampler (one jitted scan).

        Guidance ``s != 1`` blends logits ``l_null + s (l_family - l_null)``; temperature divides the
        logits (OADM: Gumbel scale, 0 = greedy; D3PM: x0 logits; relax: the x0 softmax).
        """
        fn = self.logits_fn(params)
        if guidance != 1.0:
            fn = classifier_free_guidance(fn, guidance, jnp.int32(self.null_label))
        if self.method == "oadm":
            return oadm_sample(
                key, fn, shape, mask, cond, fixed_tokens, fixed_mask, temperature=temperature
            )
        if self.method == "d3pm":
            if temperature != 1.0:
                fn = Partial(_tempered, fn, jnp.float32(1.0 / max(temperature, 1e-4)))
            return d3pm_sample(
                key, fn, self.d3pm_schedule, shape, mask, cond, fixed_tokens, fixed_mask
            )
        return relax_sample(
            key, fn, self.gauss_schedule, self.embeddings, shape, mask, cond, fixed_tokens,
            fixed_mask, clamp=self.clamp, temperature=temperature,
        )  # fmt: skip


def build_model(config: Any, num_families: int) -> SeqDiffModel:
    """The configured method and network (config: a ``SeqDiffConfig``)."""
    module = SequenceDenoiser(
        num_layers=config.num_layers, num_heads=config.num_heads, model_dim=config.model_dim,
        mlp_ratio=config.mlp_ratio, dropout_rate=config.dropout, num_classes=num_families,
    )  # fmt: skip
    common = dict(
        method=config.method, module=module, num_families=num_families,
        init_length=config.buckets[0], hybrid_lambda=config.hybrid_lambda,
        mse_weight=config.mse_weight, clamp=config.clamp, eval_orders=config.eval_orders,
    )  # fmt: skip
    if config.method == "d3pm":
        T = config.num_timesteps
        if config.transition == "uniform":
            schedule = uniform_transitions(cosine_betas(T))
        else:
            schedule = absorbing_transitions(absorbing_betas(T))
        return SeqDiffModel(d3pm_schedule=schedule, **common)
    if config.method == "relax":
        embeddings = jnp.asarray(token_embeddings(config.embed_dim, seed=config.seed))
        schedule = get_schedule(config.noise_schedule, config.num_timesteps)
        return SeqDiffModel(gauss_schedule=schedule, embeddings=embeddings, **common)
    return SeqDiffModel(**common)


def generate_tokens(
    model: SeqDiffModel,
    params: Any,
    key: jax.Array,
    lengths: list[int] | np.ndarray,
    labels: list[int] | np.ndarray,
    guidance: float,
    temperature: float,
    config: Any,
    fixed: list[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Generate one sequence per requested length (and label, -1 = unconditional) -> int32 arrays.

    Requests are grouped by bucket (``config.buckets``) and run in batches of ``config.sample_batch``
    (the last one padded by repetition), so each bucket compiles the sampler once. ``fixed`` gives per
    request ``(tokens [L_i], keep [L_i] bool)`` for inpainting: kept positions are copied, the others
    generated. Batch ``c`` of bucket ``b`` uses ``fold_in(key, b * 100003 + c)``.
    """
    lengths = np.asarray(lengths, np.int64)
    labels = np.where(np.asarray(labels) < 0, model.null_label, labels).astype(np.int32)
    which = bucket_index(lengths, tuple(config.buckets))
    out: list[np.ndarray | None] = [None] * len(lengths)
    bar = tqdm(total=len(lengths), desc="sample", disable=not progress, dynamic_ncols=True)
    for b in np.unique(which):
        rows_all = np.flatnonzero(which == b)
        width, size = int(config.buckets[b]), min(int(config.sample_batch), len(rows_all))
        for chunk, start in enumerate(range(0, len(rows_all), size)):
            real = rows_all[start : start + size]
            rows = np.concatenate([real, np.repeat(real[-1:], size - len(real))])
            mask = np.arange(width)[None, :] < lengths[rows][:, None]
            fixed_tokens = fixed_mask = None
            if fixed is not None:
                fixed_tokens = np.zeros((size, width), np.int32)
                fixed_mask = np.zeros((size, width), bool)
                for j, r in enumerate(rows):
                    seq, keep = fixed[r]
                    fixed_tokens[j, : len(seq)] = np.where(keep, seq, 0)
                    fixed_mask[j, : len(seq)] = keep
                fixed_tokens, fixed_mask = jnp.asarray(fixed_tokens), jnp.asarray(fixed_mask)
            toks = model.generate(
                params, jax.random.fold_in(key, int(b) * 100003 + chunk), (size, width),
                jnp.asarray(mask), jnp.asarray(labels[rows]), fixed_tokens, fixed_mask,
                guidance, temperature,
            )  # fmt: skip
            toks = np.asarray(jax.device_get(toks))
            for j, r in enumerate(real):
                out[r] = toks[j, : lengths[r]].astype(np.int32)
            bar.update(len(real))
    bar.close()
    return out
