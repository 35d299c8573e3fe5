"""The sequence VAE as functions of params: the model seam, its training loss and its score estimators.

:class:`VAEModel` wraps a Flax module (the lecture's ``ProteinVAE`` or DeepSequence's ``SequenceVAE``) as
``encode`` / ``decode`` / ``log_likelihood`` / ``weight_kl``; everything else here is pure and jittable:

- :func:`make_loss_fn`: ``mean_b[-log p(x_b|z_b) + beta KL(q(z|x_b) || N(0, I))] + KL(q(W) || p(W)) / N_eff``;
- :func:`make_elbo_estimator`: the ELBO per sequence over ``M`` shared draws (mutation-effect scores);
- :func:`make_posterior_mean_estimator`: the same integrand at the variational means, one pass;
- :func:`batched_elbo`: apply an estimator to ``[N, L]`` tokens in fixed-size batches.

Configs, data and training hooks live in :mod:`protgen_jax.recipes.vae.recipe`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax import vae as vae_math
from protgen_jax.errors import DataError
from protgen_jax.nn.deepsequence import SequenceVAE
from protgen_jax.recipes.base import padded_map


class VAEModel(NamedTuple):
    """A VAE as functions of params (the seam between Flax modules and the math).

    ``encode(params, tokens) -> (mu, logvar)``; ``decode(params, z, key) -> logits`` (``key=None`` uses
    the decoder's mean weights); ``weight_kl(params) -> scalar``; ``log_likelihood(logits, tokens) -> [B]``.

    ``gap_token``: when set, gaps are *not modelled* (DeepSequence / EVE): the decoder's gap logit is pinned
    to -1e9 (samples and reconstructions contain no gaps) and gap positions are left out of
    ``log p(x | z)``, so the likelihood is over the residues a sequence has. ``None`` models the gap as a
    21st letter.

    ``local_reparameterization``: the training loss draws the Bayesian output layer per example
    (``decode(..., local=True)``); scoring and sampling keep one shared draw per call.
    """

    module: Any
    bayesian: bool
    gap_token: int | None = None
    local_reparameterization: bool = False

    def init(self, key: jax.Array, seq_len: int) -> Any:
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        eps = jnp.zeros((1, self.latent_dim))
        if isinstance(self.module, SequenceVAE):
            k1, k2 = jax.random.split(key)
            return self.module.init({"params": k1, "weights": k2}, tokens, eps)
        return self.module.init(key, tokens, eps)

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    def encode(self, params, tokens):
        return self.module.apply(params, tokens, method=self.module.encode)

    def decode(self, params, z, key=None, local=False):
        if isinstance(self.module, SequenceVAE):
            if key is None or not self.bayesian:
                logits = self.module.apply(params, z, False, method=self.module.decode)
            else:
                logits = self.module.apply(
                    params, z, True, local, method=self.module.decode, rngs={"weights": key}
                )
        else:
            logits = self.module.apply(params, z, method=self.module.decode)
        if self.gap_token is not None:
            logits = logits.at[..., self.gap_token].set(-1e9)
        return logits

    def likelihood_inputs(self, tokens):
        """``(tokens, mask)`` for :func:`protgen_jax.vae.categorical_log_likelihood`: every position
        counts, or (gaps not modelled) gap positions are masked out and replaced by token 0."""
        if self.gap_token is None:
            return tokens, None
        residue = tokens != self.gap_token
        return jnp.where(residue, tokens, 0), residue

    def log_likelihood(self, logits, tokens):
        """``log p(x | z)`` per sequence ``[B]``; gap positions are skipped when gaps are not modelled."""
        return vae_math.categorical_log_likelihood(logits, *self.likelihood_inputs(tokens))

    def weight_kl(self, params):
        if isinstance(self.module, SequenceVAE) and self.bayesian:
            return self.module.apply(params, method=self.module.weight_kl)
        return jnp.zeros((), jnp.float32)


def make_loss_fn(model: VAEModel, neff: float):
    """``loss_fn(params, batch, key)`` for :func:`make_train_step`; batch = {"tokens", "beta"}."""

    def loss_fn(params, batch, key):
        tokens = batch["tokens"]
        eps_key, weight_key = jax.random.split(key)
        mu, logvar = model.encode(params, tokens)
        z = vae_math.reparameterize(eps_key, mu, logvar)
        logits = model.decode(params, z, weight_key, local=model.local_reparameterization)
        targets, mask = model.likelihood_inputs(tokens)
        terms = vae_math.negative_elbo(logits, targets, mu, logvar, batch["beta"], mask)
        weight_kl = model.weight_kl(params) / neff
        return jnp.mean(terms.loss) + weight_kl, {
            "neg_elbo": jnp.mean(terms.neg_elbo),
            "nll": jnp.mean(terms.nll),
            "kl_z": jnp.mean(terms.kl),
            "kl_weights": weight_kl,
        }

    return loss_fn


def make_elbo_estimator(model: VAEModel, num_samples: int):
    """Jitted ``mean_elbo(params, tokens [B, L], key) -> [B]``: the ELBO averaged over ``num_samples``
    draws of ``z`` (and of the decoder weights when Bayesian), with the closed-form latent KL.

    All rows share the same draws (common random numbers), so differences between rows — mutant minus
    wild type — carry much less Monte-Carlo noise than the ELBOs themselves. One ``lax.scan`` over the
    ``M`` draws keeps memory at one ``[B, L, K]`` logits tensor.
    """

    @jax.jit
    def mean_elbo(params, tokens, key):
        mu, logvar = model.encode(params, tokens)
        kl = vae_math.gaussian_kl(mu, logvar)

        def body(total, k):
            eps_key, weight_key = jax.random.split(k)
            eps = jax.random.normal(eps_key, (1, mu.shape[1]))
            z = vae_math.reparameterize_with_noise(mu, logvar, eps)
            logits = model.decode(params, z, weight_key if model.bayesian else None)
            return total + model.log_likelihood(logits, tokens) - kl, None

        total, _ = jax.lax.scan(
            body, jnp.zeros(tokens.shape[0]), jax.random.split(key, num_samples)
        )
        return total / num_samples

    return mean_elbo


def make_posterior_mean_estimator(model: VAEModel):
    """Jitted ``plug_in(params, tokens [B, L], key) -> [B]``: the ELBO's integrand at the variational
    means, ``log p(x | z = mu(x), W = E_q[W]) - KL(q(z | x) || N(0, I))``.

    Deterministic (``key`` is ignored; it is there to share :func:`make_elbo_estimator`'s signature) and
    one decoder pass per sequence instead of ``M``. It is not a bound on ``log p(x)``: it leaves out the
    spread of ``q(z | x)`` and ``q(W)`` that the Monte-Carlo ELBO averages over (measured
    comparisons for ranking mutations: ``experiments/blat_vae/README.md``)."""

    @jax.jit
    def plug_in(params, tokens, key):
        del key
        mu, logvar = model.encode(params, tokens)
        logits = model.decode(params, mu, None)
        return model.log_likelihood(logits, tokens) - vae_math.gaussian_kl(mu, logvar)

    return plug_in


SCORE_ESTIMATORS = ("elbo", "mean")


def check_score_estimator(name: str) -> str:
    """``name`` if it is one of :data:`SCORE_ESTIMATORS`, else a :class:`DataError` naming them."""
    if name not in SCORE_ESTIMATORS:
        raise DataError(
            f"unknown score estimator {name!r}; expected one of {', '.join(SCORE_ESTIMATORS)}"
        )
    return name


def make_score_estimator(model: VAEModel, name: str, num_samples: int):
    """The jitted per-sequence score ``(params, tokens [B, L], key) -> [B]`` named by ``name``:
    ``"elbo"`` (:func:`make_elbo_estimator` with ``num_samples`` draws) or ``"mean"``
    (:func:`make_posterior_mean_estimator`)."""
    if check_score_estimator(name) == "mean":
        return make_posterior_mean_estimator(model)
    return make_elbo_estimator(model, num_samples)


def batched_elbo(estimator, params, tokens: np.ndarray, key, batch_size: int = 256, progress=None):
    """Apply ``estimator`` to ``tokens [N, L]`` in fixed-size batches (the last one padded): ``[N]``."""
    values = padded_map(
        lambda chunk: estimator(params, jnp.asarray(chunk), key), (tokens,), batch_size, progress
    )
    return values.astype(np.float64)
