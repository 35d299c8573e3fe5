"""DeepSequence-style sequence VAE: the lecture's ProteinVAE with a Bayesian, group-sparse decoder.

Riesselman, Ingraham & Marks (2018), "Deep generative models of genetic variation capture the effects of
mutations". The encoder is the lecture's MLP (``[B, L, K]`` one-hot -> ``mu, logvar [B, D]``); the decoder
``z [B, D] -> logits [B, L, K]`` differs in four ways that regularize it on small alignments:

1. **Variational (Bayesian) weights.** Every decoder weight ``w ~ N(mu_w, sigma_w^2)`` with prior
   ``N(0, 1)``; a fresh draw per forward pass (shared across the batch), and ``KL(q(w) || p(w))`` enters the
   objective once per dataset (divided by ``N_eff`` per example).
2. **Group sparsity.** Output weights ``W [H, L, K]`` are scaled by ``sigmoid(S)[h mod H/tiles, l]`` where
   ``S`` has a logit-normal spike-and-slab-like prior ``N(mu_S, 4^2)`` with ``sigmoid`` mass ``p = 0.01``
   "on" (``mu_S = sqrt(2) * 4 * erfinv(2p - 1)``): each hidden unit talks to few positions.
3. **A shared amino-acid dictionary.** ``W = W' @ C`` with ``W' [H, L, d]`` and ``C [d, K]`` (d = 40).
4. **A learned inverse temperature** ``softplus(lambda)`` on the logits.

Training can draw the output layer with the **local reparameterization trick** (Kingma, Salimans & Welling
2015): given the hidden activations ``h [B, H]``, the sampled gates ``g [H, L]`` and dictionary ``C [d, K]``,
the pre-dictionary activations ``A[b, l, :] = sum_h h[b, h] g[h, l] W'[h, l, :]`` are Gaussian with mean
``h @ (g * mu')`` and variance ``h^2 @ (g^2 * sigma'^2)``, so one draws ``A`` per example
(``[B, L, d]`` normals) instead of one ``W' [H, L, d]`` for the whole batch. Each example's logits have the
same distribution as before (the objective is unchanged) but examples no longer share one weight draw, so
the gradient variance of the 5M output weights falls by up to the batch size. Scoring keeps shared draws
(common random numbers between a mutant and the wild type).

Setting ``bayesian=False`` gives point-estimate weights (then the KL term is 0) and ``sparsity=False`` /
``dictionary_size=0`` switch off 2 and 3, so the same module spans "lecture VAE" to "DeepSequence".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from scipy.special import erfinv

from protgen_jax.vae import reparameterize_with_noise

Dtype = jnp.dtype


def _glorot(key, shape, dtype=jnp.float32):
    fan_in, fan_out = shape[0], math.prod(shape[1:])
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (fan_in + fan_out))


def normal_kl_scalar(mu, log_sigma, prior_mu=0.0, prior_log_sigma=0.0) -> jax.Array:
    """``sum KL(N(mu, e^{2 log_sigma}) || N(prior_mu, e^{2 prior_log_sigma}))`` over all elements."""
    return jnp.sum(
        prior_log_sigma
        - log_sigma
        + 0.5
        * (jnp.exp(2.0 * log_sigma) + jnp.square(mu - prior_mu))
        * math.exp(-2.0 * prior_log_sigma)
        - 0.5
    )


class _Weight(nn.Module):
    """One variational weight tensor: ``mu`` and ``log_sigma`` params, sampled or at its mean."""

    shape: tuple[int, ...]
    bayesian: bool
    mean_init: object = _glorot
    init_log_sigma: float = -5.0
    prior_mu: float = 0.0
    prior_log_sigma: float = 0.0

    def setup(self):
        self.mu = self.param("mu", self.mean_init, self.shape)
        if self.bayesian:
            self.log_sigma = self.param(
                "log_sigma", nn.initializers.constant(self.init_log_sigma), self.shape
            )

    def __call__(self, sample: bool) -> jax.Array:
        if not (self.bayesian and sample):
            return self.mu
        eps = jax.random.normal(self.make_rng("weights"), self.shape)
        return self.mu + self.sigma() * eps

    def sigma(self) -> jax.Array:
        """Standard deviation of ``q(w)`` (only for variational weights)."""
        return jnp.exp(self.log_sigma)

    def kl(self) -> jax.Array:
        if not self.bayesian:
            return jnp.zeros((), jnp.float32)
        return normal_kl_scalar(self.mu, self.log_sigma, self.prior_mu, self.prior_log_sigma)


class SparseBayesianDecoder(nn.Module):
    """DeepSequence decoder ``z [B, D] -> logits [B, L, K]`` (see the module docstring).

    Attributes:
      seq_len: ``L``.
      vocab_size: ``K``.
      hidden: widths of the hidden layers (ReLU, then sigmoid on the last, as in DeepSequence).
      bayesian: variational weights (else point estimates).
      sparsity: group-sparsity scales on the output weights.
      num_tiles: hidden units share a sparsity scale every ``H / num_tiles`` units.
      dictionary_size: ``d`` of the amino-acid dictionary ``C [d, K]`` (0 = none).
      sparsity_prior_p: prior probability mass of an "on" scale.
      sparsity_prior_std: std of the logit-normal scale prior.
      temperature: learn the inverse temperature ``softplus(lambda)``.
    """

    seq_len: int
    latent_dim: int
    vocab_size: int = 21
    hidden: Sequence[int] = (100, 500)
    bayesian: bool = True
    sparsity: bool = True
    num_tiles: int = 4
    dictionary_size: int = 40
    sparsity_prior_p: float = 0.01
    sparsity_prior_std: float = 4.0
    temperature: bool = True
    dtype: Dtype = jnp.float32

    def setup(self):
        L, K, H = self.seq_len, self.vocab_size, self.hidden[-1]
        bias_init = nn.initializers.constant(0.1)
        widths = (self.latent_dim, *self.hidden)
        self.weights = [
            _Weight((widths[i], widths[i + 1]), self.bayesian, name=f"w{i}")
            for i in range(len(self.hidden))
        ]
        self.biases = [
            _Weight((w,), self.bayesian, bias_init, name=f"b{i}") for i, w in enumerate(self.hidden)
        ]
        self.w_out = _Weight((H, L * (self.dictionary_size or K)), self.bayesian)
        if self.dictionary_size:
            self.dictionary = _Weight((self.dictionary_size, K), self.bayesian)
        if self.sparsity:
            if H % self.num_tiles:
                raise ValueError(f"hidden[-1]={H} must be divisible by num_tiles={self.num_tiles}")
            prior_mu = (
                math.sqrt(2.0)
                * self.sparsity_prior_std
                * float(erfinv(2.0 * self.sparsity_prior_p - 1.0))
            )
            self.scale = _Weight(
                (H // self.num_tiles, L),
                self.bayesian,
                nn.initializers.ones,
                prior_mu=prior_mu,
                prior_log_sigma=math.log(self.sparsity_prior_std),
            )
        self.b_out = _Weight((L * K,), self.bayesian, bias_init)
        if self.temperature:
            self.inv_temperature = _Weight((1,), self.bayesian, nn.initializers.ones)

    def __call__(self, z: jax.Array, sample: bool = True, local: bool = False) -> jax.Array:
        """Logits ``[B, L, K]`` (float32) for latents ``z [B, D]``; ``sample`` draws the weights
        (needs the ``"weights"`` rng), else uses their means. ``local`` (with ``sample``) draws the
        output layer per example by the local reparameterization trick (see the module docstring)."""
        L, K = self.seq_len, self.vocab_size
        h = z.astype(self.dtype)
        last = len(self.hidden) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w(sample).astype(self.dtype) + b(sample).astype(self.dtype)[None]
            h = nn.sigmoid(h) if i == last else nn.relu(h)
        if local and sample and self.bayesian:
            logits = self._local_output(h)
        else:
            logits = self._shared_output(h, sample)
        if self.temperature:
            logits = logits * nn.softplus(self.inv_temperature(sample)).astype(self.dtype)[None]
        return logits.reshape(z.shape[0], L, K).astype(jnp.float32)

    def _gate(self, sample: bool) -> jax.Array:
        """Sparsity gates ``sigmoid(S)`` tiled to ``[H, L]`` (ones without sparsity)."""
        if not self.sparsity:
            return jnp.ones((self.hidden[-1], self.seq_len), jnp.float32)
        return nn.sigmoid(jnp.tile(self.scale(sample), (self.num_tiles, 1)))

    def _local_output(self, h: jax.Array) -> jax.Array:
        """``[B, L*K]`` output pre-activations with per-example draws of ``A = h @ (g * W')``."""
        L, K, H = self.seq_len, self.vocab_size, self.hidden[-1]
        d = self.dictionary_size or K
        gate = self._gate(True)[:, :, None]  # [H, L, 1]
        mu, sigma = self.w_out.mu, self.w_out.sigma()
        mean = h @ (gate * mu.reshape(H, L, d)).reshape(H, L * d).astype(self.dtype)
        var = jnp.square(h) @ (jnp.square(gate * sigma.reshape(H, L, d))).reshape(H, L * d)
        noise = jax.random.normal(self.make_rng("weights"), mean.shape, mean.dtype)
        act = mean + jnp.sqrt(var.astype(self.dtype) + 1e-12) * noise  # [B, L*d]
        if self.dictionary_size:
            act = act.reshape(-1, d) @ self.dictionary(True).astype(self.dtype)
        # The output bias is its own weight per example: b_mu + b_sigma * noise with noise [B, L*K].
        bias = self.b_out.mu[None] + self.b_out.sigma()[None] * jax.random.normal(
            self.make_rng("weights"), (h.shape[0], L * K)
        )
        return act.reshape(h.shape[0], L * K) + bias.astype(self.dtype)

    def _shared_output(self, h: jax.Array, sample: bool) -> jax.Array:
        """``[B, L*K]`` output pre-activations with one weight draw (or the means) for the batch."""
        L, K, H = self.seq_len, self.vocab_size, self.hidden[-1]
        w_out = self.w_out(sample)
        if self.dictionary_size:
            w_out = w_out.reshape(H * L, self.dictionary_size) @ self.dictionary(sample)
        w_out = w_out.reshape(H, L, K)
        if self.sparsity:
            w_out = w_out * self._gate(sample)[:, :, None]
        logits = h @ w_out.reshape(H, L * K).astype(self.dtype)
        return logits + self.b_out(sample).astype(self.dtype)[None]

    def weight_kl(self) -> jax.Array:
        """``KL(q(W) || p(W))`` summed over every variational weight (0 for point estimates)."""
        parts = [*self.weights, *self.biases, self.w_out, self.b_out]
        parts += [self.dictionary] if self.dictionary_size else []
        parts += [self.scale] if self.sparsity else []
        parts += [self.inv_temperature] if self.temperature else []
        return sum((p.kl() for p in parts), jnp.zeros((), jnp.float32))


class MLPEncoder(nn.Module):
    """The lecture's encoder: one-hot ``[B, L, K]`` flattened, ReLU MLP, then ``mu`` and ``logvar [B, D]``.

    The log-variance head's bias starts at ``logvar_init`` (DeepSequence starts ``log sigma`` at -5, i.e.
    ``logvar = -10``), so early training is close to an autoencoder and the KL term opens up gradually.
    """

    latent_dim: int
    widths: Sequence[int] = (1500, 1500)
    logvar_init: float = -10.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_onehot: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x_onehot.reshape(x_onehot.shape[0], -1).astype(self.dtype)
        for w in self.widths:
            h = nn.relu(nn.Dense(w, dtype=self.dtype)(h))
        mu = nn.Dense(self.latent_dim, dtype=self.dtype, name="mu")(h)
        logvar = nn.Dense(
            self.latent_dim,
            dtype=self.dtype,
            bias_init=nn.initializers.constant(self.logvar_init),
            name="logvar",
        )(h)
        return mu.astype(jnp.float32), logvar.astype(jnp.float32)


class SequenceVAE(nn.Module):
    """Encoder + :class:`SparseBayesianDecoder`, with the lecture's ``encode`` / ``decode`` / ``__call__``.

    ``__call__(tokens [B, L] int or one-hot [B, L, K], eps [B, D], sample_weights, local) -> (logits, mu,
    logvar)``;
    ``weight_kl()`` gives the decoder's weight KL. Defaults are DeepSequence's (1500-1500 encoder,
    z = 30, 100-500 decoder).
    """

    seq_len: int
    vocab_size: int = 21
    latent_dim: int = 30
    encoder_widths: Sequence[int] = (1500, 1500)
    decoder_widths: Sequence[int] = (100, 500)
    bayesian: bool = True
    sparsity: bool = True
    dictionary_size: int = 40
    sparsity_prior_p: float = 0.01
    temperature: bool = True
    dtype: Dtype = jnp.float32

    def setup(self):
        self.encoder = MLPEncoder(self.latent_dim, self.encoder_widths, dtype=self.dtype)
        self.decoder = SparseBayesianDecoder(
            self.seq_len,
            self.latent_dim,
            self.vocab_size,
            self.decoder_widths,
            bayesian=self.bayesian,
            sparsity=self.sparsity,
            dictionary_size=self.dictionary_size,
            sparsity_prior_p=self.sparsity_prior_p,
            temperature=self.temperature,
            dtype=self.dtype,
        )

    def _one_hot(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            return jax.nn.one_hot(x, self.vocab_size, dtype=jnp.float32)
        return x.astype(jnp.float32)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mu, logvar) [B, D]`` for tokens ``[B, L]`` or one-hot ``[B, L, K]``."""
        return self.encoder(self._one_hot(x))

    def decode(self, z: jax.Array, sample_weights: bool = False, local: bool = False) -> jax.Array:
        """Logits ``[B, L, K]``; ``sample_weights`` draws decoder weights (rng ``"weights"``), per example
        for the output layer when ``local`` (local reparameterization; training only)."""
        return self.decoder(z, sample_weights, local)

    def weight_kl(self) -> jax.Array:
        """``KL(q(W) || p(W))`` of the decoder weights (scalar, nats)."""
        return self.decoder.weight_kl()

    def __call__(
        self, x: jax.Array, eps: jax.Array, sample_weights: bool = True, local: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        mu, logvar = self.encode(x)
        z = reparameterize_with_noise(mu, logvar, eps)
        return self.decode(z, sample_weights, local), mu, logvar
