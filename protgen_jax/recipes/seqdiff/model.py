"""The three sequence-diffusion methods behind one network: losses, likelihood bounds and generation.

:class:`SeqDiffModel` binds a :class:`~protgen_jax.nn.sequence_denoiser.SequenceDenoiser` to the math of
``protgen_jax.discrete`` (OADM, D3PM) or ``protgen_jax.discrete.relax``. The network is passed to the
math as ``logits_fn = jax.tree_util.Partial(module.apply, params)``, so new params reuse the compiled
samplers. Tokens are ``[B, L]`` int32 (``protgen_jax.alphabet``), masks ``[B, L]`` bool, family
labels ``cond [B]`` int32 with ``num_families`` as the null class.

Guidance ``s`` blends logits ``l_null + s (l_family - l_null)`` (``s = 1``: conditional, ``s = 0``:
the null label alone, one network pass). Temperature ``tau`` divides the logits; ``tau = 0`` replaces
them by ``0`` at ``argmax`` and ``-1e9`` elsewhere, so every draw from them is the argmax (greedy).

A background mixture of weight ``w`` with a composition ``q [20]`` (the training unigram) replaces the
prediction by ``p = (1 - w) softmax(l / tau) + w q`` (logits ``log p``). Its log-loss is at most
``(1 - w)`` times the network's plus ``w`` times the composition's (``-log`` is convex), and it caps
the loss of any residue at ``-log(w q_a)``: a hedge for sequences unlike the training families.
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

from protgen_jax import alphabet as vocab
from protgen_jax import keys
from protgen_jax.data.sequences import bucket_index, pad_batch
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
from protgen_jax.discrete.relax import relax_loss, relax_nll_bound, relax_sample, token_embeddings
from protgen_jax.fit import compute_dtype
from protgen_jax.nn.sequence_denoiser import SequenceDenoiser
from protgen_jax.recipes.base import padded_map

_NEG_LOGIT = -1e9  # the GAP and MASK logits of absorbing D3PM: x0 is never either


def _append_mask_logit(logits_fn, x_t, t, mask, cond):
    """``[B, L, 20]`` amino-acid logits -> ``[B, L, K_ABSORBING = 22]``, GAP and MASK classes at -1e9."""
    logits = logits_fn(x_t, t, mask, cond)
    extra = vocab.K_ABSORBING - vocab.K_AA
    pad = jnp.full(logits.shape[:-1] + (extra,), _NEG_LOGIT, logits.dtype)
    return jnp.concatenate([logits, pad], axis=-1)


def _tempered(logits_fn, inv_temperature, x_t, t, mask, cond):
    return logits_fn(x_t, t, mask, cond) * inv_temperature


def _background_mixed(logits_fn, log_weights, log_background, x_t, t, mask, cond):
    """``log((1 - w) softmax(l) + w q)`` ``[B, L, 20]``; ``log_weights = (log(1 - w), log w)``,
    ``log_background = log q [20]``."""
    log_p = jax.nn.log_softmax(logits_fn(x_t, t, mask, cond).astype(jnp.float32), axis=-1)
    log_q = jnp.broadcast_to(log_background, log_p.shape)
    return jnp.logaddexp(log_weights[0] + log_p, log_weights[1] + log_q)


def background_mixed(logits_fn: Callable, weight: float, log_background: Any) -> Partial:
    """``logits_fn`` (20 amino-acid logits) mixed with the composition ``exp(log_background) [20]`` at
    weight ``weight`` in [0, 1) (see the module docstring); a pytree, so new weights reuse compiles."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"background weight must be in [0, 1), got {weight}")
    log_q = jnp.asarray(log_background, jnp.float32)
    if log_q.shape != (vocab.K_AA,):
        raise ValueError(f"background must be [{vocab.K_AA}] log-probabilities, got {log_q.shape}")
    log_q = jax.nn.log_softmax(log_q)
    log_weights = jnp.log(jnp.asarray([1.0 - weight, weight], jnp.float32))
    return Partial(_background_mixed, logits_fn, log_weights, log_q)


def _greedy(logits_fn, x_t, t, mask, cond):
    """Temperature 0: logits ``0`` at ``argmax_k l_k`` and ``-1e9`` elsewhere (a one-hot softmax)."""
    logits = logits_fn(x_t, t, mask, cond)
    best = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=bool)
    return jnp.where(best, 0.0, _NEG_LOGIT).astype(logits.dtype)


@dataclass(frozen=True, eq=False)
class SeqDiffModel:
    """One method (``"oadm"``, ``"d3pm"`` or ``"relax"``) on a ``SequenceDenoiser``.

    ``d3pm_schedule`` is set for D3PM (K = 20 uniform or 22 absorbing); ``gauss_schedule`` and
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
        """Add the GAP and MASK columns for absorbing D3PM (its K is 22); identity otherwise."""
        if self.d3pm_schedule is not None and self.d3pm_schedule.num_classes == vocab.K_ABSORBING:
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

    def nll(
        self, params: Any, key: jax.Array, x0: jax.Array, mask: jax.Array, cond: jax.Array,
        temperature: float = 1.0, background: tuple[float, Any] | None = None,
    ):  # fmt: skip
        """Per-sequence upper bound on ``-log p(x0 | family)`` in nats ``[B]``.

        OADM: minus the exact-order log-likelihood averaged over ``eval_orders`` random orders; D3PM:
        the full variational bound (T terms); relax: the embedding-diffusion bound. ``temperature`` tau
        > 0 divides the network's logits first, then ``background = (w, log q [20])`` mixes the
        prediction with the composition q (:func:`background_mixed`); both are calibrations, the
        defaults give the model as trained.
        """
        fn = Partial(self.module.apply, params)
        if temperature != 1.0:
            fn = Partial(_tempered, fn, jnp.float32(1.0 / temperature))
        if background is not None and background[0] > 0.0:
            fn = background_mixed(fn, float(background[0]), background[1])
        fn = self._k_logits(fn)
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
        known: jax.Array | None = None,
        known_mask: jax.Array | None = None,
        guidance: float = 1.0,
        temperature: float = 1.0,
    ) -> jax.Array:
        """Sample tokens ``[B, L]`` (PAD at padding) with the method's sampler (one jitted scan).

        ``guidance`` s: ``s = 0`` samples with the null label (the unconditional model, exactly),
        ``s = 1`` with ``cond``, any other ``s`` blends ``l_null + s (l_cond - l_null)``.
        ``temperature`` tau >= 0 divides the logits (OADM: Gumbel scale; D3PM: x0 logits; relax: the
        x0 softmax); ``tau = 0`` is greedy (see the module docstring).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        fn = self.logits_fn(params)
        if guidance == 0.0:
            cond = jnp.full_like(cond, self.null_label)
        elif guidance != 1.0:
            fn = classifier_free_guidance(fn, guidance, jnp.int32(self.null_label))
        if temperature == 0.0:
            fn, temperature = Partial(_greedy, fn), 1.0
        if self.method == "oadm":
            return oadm_sample(
                key, fn, shape, mask=mask, cond=cond, known=known, known_mask=known_mask,
                temperature=temperature,
            )  # fmt: skip
        if self.method == "d3pm":
            if temperature != 1.0:
                fn = Partial(_tempered, fn, jnp.float32(1.0 / temperature))
            return d3pm_sample(
                key, fn, self.d3pm_schedule, shape, mask=mask, cond=cond, known=known,
                known_mask=known_mask,
            )  # fmt: skip
        return relax_sample(
            key, fn, self.gauss_schedule, shape, embeddings=self.embeddings, mask=mask,
            cond=cond, known=known, known_mask=known_mask, clamp=self.clamp,
            temperature=temperature,
        )  # fmt: skip


def build_model(config: Any, num_families: int) -> SeqDiffModel:
    """The configured method and network (config: a ``SeqDiffConfig``; compute dtype ``config.dtype``,
    logits float32)."""
    module = SequenceDenoiser(
        num_layers=config.num_layers, num_heads=config.num_heads, model_dim=config.model_dim,
        mlp_ratio=config.mlp_ratio, dropout_rate=config.dropout, num_classes=num_families,
        dtype=compute_dtype(config),
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


def progress_bar(total: int, desc: str, progress: bool | None) -> tqdm:
    """A tqdm bar over ``total`` items; ``progress`` None: shown only on a terminal, False: hidden."""
    disable = None if progress is None else not progress
    return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True)


def _open_bar(bar: Any, progress: bool | None, total: int, desc: str) -> tuple[Any, bool]:
    """``(bar, opened_here)``: the given bar, or a new one that the caller closes."""
    if bar is not None:
        return bar, False
    return progress_bar(total, desc, progress), True


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
    progress: bool | None = None,
    bar: Any = None,
) -> list[np.ndarray]:
    """Generate one sequence per requested length (and label, -1 = unconditional) -> int32 arrays.

    Requests are grouped by bucket (``config.buckets``) and run through :func:`padded_map` in batches
    of ``min(config.sample_batch, n_b)`` rows, so each bucket compiles the sampler once. ``fixed``
    gives per request ``(tokens [L_i], keep [L_i] bool)`` for inpainting: kept positions are copied,
    the others generated. Batch ``c`` of the bucket of length ``L_b`` uses
    ``fold_in(named(key, f"bucket{L_b}"), c)``. ``progress`` None: a bar only on a terminal; ``bar``: an
    open tqdm bar to advance instead (left open, so one bar can count several calls).
    """
    lengths = np.asarray(lengths, np.int64)
    labels = np.where(np.asarray(labels) < 0, model.null_label, labels).astype(np.int32)
    which = bucket_index(lengths, tuple(config.buckets))
    out: list[np.ndarray | None] = [None] * len(lengths)
    bar, own_bar = _open_bar(bar, progress, len(lengths), "sample")
    for b in np.unique(which):
        rows = np.flatnonzero(which == b)
        width, size = int(config.buckets[b]), min(int(config.sample_batch), len(rows))
        bucket_key = keys.named(key, f"bucket{width}")
        known = np.zeros((len(rows), width), np.int32)
        known_mask = np.zeros((len(rows), width), bool)
        if fixed is not None:
            for j, r in enumerate(rows):
                seq, keep = fixed[r]
                known[j, : len(seq)] = np.where(keep, seq, 0)
                known_mask[j, : len(seq)] = keep

        def run(batch_lengths, batch_labels, tokens, keep, chunk, width=width, key=bucket_key):
            mask = np.arange(width)[None, :] < batch_lengths[:, None]
            given = (jnp.asarray(tokens), jnp.asarray(keep)) if fixed is not None else (None, None)
            return model.generate(
                params, jax.random.fold_in(key, int(chunk[0])), (len(mask), width),
                jnp.asarray(mask), jnp.asarray(batch_labels), *given, guidance, temperature,
            )  # fmt: skip

        chunks = np.arange(len(rows)) // size
        toks = padded_map(run, (lengths[rows], labels[rows], known, known_mask, chunks), size, bar)
        for j, r in enumerate(rows):
            out[r] = toks[j, : lengths[r]].astype(np.int32)
    if own_bar:
        bar.close()
    return out


def sequence_nll(
    model: SeqDiffModel,
    params: Any,
    key: jax.Array,
    seqs: list[np.ndarray],
    labels: np.ndarray,
    config: Any,
    progress: bool | None = None,
    bar: Any = None,
    temperature: float = 1.0,
    background: tuple[float, Any] | None = None,
) -> np.ndarray:
    """Per-sequence NLL bound ``[N]`` (nats) of sequences <= max_len, batched by bucket (logits divided
    by ``temperature`` and mixed with ``background = (w, log q)``, see :meth:`SeqDiffModel.nll`).

    labels ``[N]`` (-1 = null class). Every batch of the bucket of length ``L_b`` has
    ``tokens_per_batch // L_b`` rows (:func:`padded_map`), so each bucket compiles once whatever the
    data. Batch ``c`` of that bucket uses ``fold_in(named(key, f"bucket{L_b}"), c)``. ``progress`` None:
    a bar (advanced by sequences) only on a terminal; ``bar``: an open tqdm bar to advance instead.
    """
    cfg = config
    lengths = np.array([len(s) for s in seqs])
    which = bucket_index(lengths, tuple(cfg.buckets))
    cond_all = np.where(labels < 0, model.null_label, labels).astype(np.int32)
    out = np.zeros(len(seqs))
    bar, own_bar = _open_bar(bar, progress, len(seqs), "likelihood")
    for b in np.unique(which):
        rows = np.flatnonzero(which == b)
        width = int(cfg.buckets[b])
        size = max(1, cfg.tokens_per_batch // width)
        tokens, mask = pad_batch([seqs[r] for r in rows], width)
        bucket_key = keys.named(key, f"bucket{width}")

        def nll(tokens, mask, cond, chunk, bucket_key=bucket_key):
            batch_key = jax.random.fold_in(bucket_key, int(chunk[0]))
            return model.nll(
                params, batch_key, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(cond),
                temperature, background,
            )  # fmt: skip

        chunks = np.arange(len(rows)) // size
        out[rows] = padded_map(nll, (tokens, mask, cond_all[rows], chunks), size, bar)
    if own_bar:
        bar.close()
    return out
