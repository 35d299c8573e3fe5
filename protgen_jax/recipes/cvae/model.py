"""The conditional sequence VAE as functions of params, and its training loss.

:class:`CVAEModel` wraps ``nn.vae.ConditionalProteinVAE`` (or ``ProteinVAE`` when there is no
condition) on fixed-width rows (``protgen_jax.data.fixed_width``). The decoder's condition vector is

    c = [one_hot(f, F + 1), p]        [B, F + 1 + P]

with ``f`` the family label (index ``F`` = the null class: no family / label dropped) and ``p`` the
z-scored property vector; the family block is absent for ``condition = "none"``, the property block
without properties. The network embeds ``c`` with one Dense and concatenates it with ``z``.

Loss (:func:`make_loss_fn`), per row ``x`` of width ``W`` with mask ``m_l = [l <= first END]``:

    -ELBO(x) = -sum_l m_l log p(x_l | z, c) + KL(q(z | x) || N(0, I)),   z = mu + sigma * eps

training minimizes the batch mean of ``nll + beta * KL`` (``beta`` ramped by the KL warm-up).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from protgen_jax import vae as vae_math
from protgen_jax.data.fixed_width import END, reconstruction_mask


class CVAEModel(NamedTuple):
    """A fixed-width sequence VAE with an optional family / property condition.

    ``num_families``: ``F`` (0 = no family condition); ``num_properties``: ``P``; ``width``: ``W``.
    Hashable, so it can be a static argument of ``jax.jit``.
    """

    module: Any
    num_families: int
    num_properties: int
    width: int

    @property
    def latent_dim(self) -> int:
        return self.module.latent_dim

    @property
    def null_family(self) -> int:
        """The null family label ``F`` (unconditional decoding)."""
        return self.num_families

    @property
    def condition_dim(self) -> int:
        return (self.num_families + 1 if self.num_families else 0) + self.num_properties

    def condition(self, family: jax.Array, props: jax.Array | None) -> jax.Array | None:
        """``family [B]`` int, ``props [B, P]`` z-scored float (None = zeros) -> ``c [B, C]`` or None."""
        parts = []
        if self.num_families:
            parts.append(jax.nn.one_hot(family, self.num_families + 1, dtype=jnp.float32))
        if self.num_properties:
            if props is None:
                props = jnp.zeros((family.shape[0], self.num_properties), jnp.float32)
            parts.append(props.astype(jnp.float32))
        return jnp.concatenate(parts, -1) if parts else None

    def init(self, key: jax.Array) -> Any:
        tokens = jnp.zeros((1, self.width), jnp.int32)
        eps = jnp.zeros((1, self.latent_dim))
        cond = self.condition(jnp.zeros((1,), jnp.int32), None)
        if cond is None:
            return self.module.init(key, tokens, eps)
        return self.module.init(key, tokens, cond, eps)

    def encode(self, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Rows ``[B, W]`` -> ``(mu, logvar)`` ``[B, D]`` (the encoder sees no condition)."""
        return self.module.apply(params, tokens, method=self.module.encode)

    def decode(
        self, params: Any, z: jax.Array, family: jax.Array, props: jax.Array | None
    ) -> jax.Array:
        """``z [B, D]``, ``family [B]``, ``props [B, P]`` z-scored (or None) -> logits ``[B, W, 21]``."""
        cond = self.condition(family, props)
        if cond is None:
            return self.module.apply(params, z, method=self.module.decode)
        return self.module.apply(params, z, cond, method=self.module.decode)


def elbo_terms(
    model: CVAEModel, params: Any, batch: dict[str, jax.Array], eps: jax.Array, beta: Any = 1.0
) -> vae_math.ElboTerms:
    """Per-row ELBO terms ``[B]`` of ``batch`` (``tokens [B, W]``, ``family [B]``, ``props [B, P]``)
    with the given noise ``eps [B, D]`` (zeros: the decoder at the posterior means)."""
    tokens = batch["tokens"]
    mu, logvar = model.encode(params, tokens)
    z = vae_math.reparameterize_with_noise(mu, logvar, eps)
    logits = model.decode(params, z, batch["family"], batch.get("props"))
    return vae_math.negative_elbo(logits, tokens, mu, logvar, beta, reconstruction_mask(tokens))


def residues(tokens: jax.Array) -> jax.Array:
    """Residues per row ``[B]`` (tokens other than END)."""
    return jnp.sum(tokens != END, -1)


def make_loss_fn(model: CVAEModel):
    """``loss(params, batch, key) -> (mean_b[nll_b + beta KL_b], aux)``; batch adds ``beta``."""

    def loss_fn(params, batch, key):
        eps = jax.random.normal(key, (batch["tokens"].shape[0], model.latent_dim))
        terms = elbo_terms(model, params, batch, eps, batch["beta"])
        count = jnp.maximum(jnp.sum(residues(batch["tokens"])), 1)
        return jnp.mean(terms.loss), {
            "neg_elbo": jnp.mean(terms.neg_elbo),
            "neg_elbo_per_residue": jnp.sum(terms.neg_elbo) / count,
            "nll": jnp.mean(terms.nll),
            "kl_z": jnp.mean(terms.kl),
            "beta": batch["beta"],
        }

    return loss_fn
