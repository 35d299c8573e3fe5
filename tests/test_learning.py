"""Short training runs that must learn: a DDPM on a 2-D mixture and a ProteinVAE on real BLAT_ECOLX rows."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from protgen_jax import diffusion as dif
from protgen_jax import vae
from protgen_jax.nn import MLPDenoiser, ProteinVAE
from protgen_jax.train import TrainState, make_train_step

CENTERS = np.array([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], np.float32)


def _mixture(rng, n):
    idx = rng.integers(0, len(CENTERS), n)
    return (CENTERS[idx] + 0.3 * rng.normal(size=(n, 2))).astype(np.float32)


def test_ddpm_with_mlp_learns_a_2d_mixture():
    schedule = dif.linear_schedule(200, 1e-4 * 5, 0.02 * 5)
    model = MLPDenoiser(hidden_widths=(128, 128, 128), time_embed_dim=32)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
    optimizer = optax.adam(2e-3)
    state = TrainState.create(model.apply, params, optimizer, ema_decay=0.99)

    def loss_fn(p, batch, key):
        return jnp.mean(dif.diffusion_loss(key, Partial(model.apply, p), schedule, batch)), {}

    step = make_train_step(loss_fn, optimizer, steps_per_call=50)
    rng = np.random.default_rng(0)
    losses = []
    for i in range(30):
        batch = jnp.asarray(_mixture(rng, 50 * 256).reshape(50, 256, 2))
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses

    samples = np.asarray(
        dif.ddpm_sample(jax.random.key(1), state.ema_apply_fn, schedule, (2000, 2))
    )
    data = _mixture(np.random.default_rng(1), 20000)
    np.testing.assert_allclose(samples.mean(0), data.mean(0), atol=0.2)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(data.T), atol=0.35)
    # and the samples sit on the modes, not between them
    nearest = np.min(np.linalg.norm(samples[:, None] - CENTERS[None], axis=-1), axis=1)
    assert np.mean(nearest < 1.0) > 0.85


def test_protein_vae_reconstructs_real_blat_sequences_better_than_chance(shared_data):
    from protgen_jax.data import read_alignment

    aln = read_alignment(shared_data / "blat_ecolx" / "BLAT_ECOLX.a2m")
    tokens = jnp.asarray(aln.tokens[:64])
    length = tokens.shape[1]
    model = ProteinVAE(seq_len=length, encoder_widths=(256,), decoder_widths=(256,), latent_dim=16)
    params = model.init(jax.random.key(0), tokens[:1], jnp.zeros((1, 16)))
    optimizer = optax.adam(3e-3)
    state = TrainState.create(model.apply, params, optimizer)

    def loss_fn(p, batch, key):
        eps = jax.random.normal(key, (batch.shape[0], 16))
        logits, mu, logvar = model.apply(p, batch, eps)
        terms = vae.negative_elbo(logits, batch, mu, logvar, beta=0.1)
        return jnp.mean(terms.loss), {"kl": jnp.mean(terms.kl)}

    step = make_train_step(loss_fn, optimizer, steps_per_call=20)
    stacked = jnp.broadcast_to(tokens, (20,) + tokens.shape)
    for i in range(15):
        state, _ = step(state, stacked, jax.random.key(i))

    mu, _ = model.apply(state.params, tokens, method=model.encode)
    recon = jnp.argmax(model.apply(state.params, mu, method=model.decode), axis=-1)
    accuracy = float(jnp.mean(recon == tokens))
    # chance for 21 letters is ~0.05; the column-wise consensus of these 64 rows is a stronger baseline
    consensus = jnp.argmax(jax.nn.one_hot(tokens, 21).sum(0), -1)
    consensus_accuracy = float(jnp.mean(consensus[None] == tokens))
    assert accuracy > max(1 / 21, consensus_accuracy) + 0.05, (accuracy, consensus_accuracy)
