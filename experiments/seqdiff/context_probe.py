"""How much of a left-out family can be predicted without having seen it? Two simple probes.

1. In-sequence composition: the Dirichlet-multinomial (Polya urn) model with prior ``alpha q`` (``q`` the
   training composition) predicts each residue from the composition of the residues already seen, in
   any order; its likelihood ``log DM(n | alpha q)`` does not depend on the order, so it is the exact
   likelihood of an order-agnostic model that knows only the composition.
2. Local context: a multinomial logistic regression on the one-hot letters at offsets ``-W..-1`` and
   ``1..W`` (all of them visible), fitted on the training families or on the structure chains
   (``chain_sequences.py``), then scored on the left-out families.

Both are reported next to the training composition's perplexity on the same residues::

    python experiments/seqdiff/context_probe.py --chains chains.fasta \\
        --exclude PF00041 PF00111 PF00168 PF00498 PF12844
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import gammaln

from protgen_jax.alphabet import K_AA
from protgen_jax.data import resolve
from protgen_jax.data.sequences import read_sequences, split_families


def composition(seqs: list[np.ndarray]) -> np.ndarray:
    counts = np.ones(K_AA) + sum(np.bincount(s, minlength=K_AA)[:K_AA] for s in seqs)
    return counts / counts.sum()


def dirichlet_multinomial_nll(seqs: list[np.ndarray], q: np.ndarray, alpha: float) -> float:
    """``-sum_x log DM(counts(x) | alpha q)`` (nats) over the sequences."""
    total = 0.0
    for s in seqs:
        n = np.bincount(s, minlength=K_AA)[:K_AA]
        total += gammaln(alpha) - gammaln(alpha + len(s))
        total += np.sum(gammaln(alpha * q + n) - gammaln(alpha * q))
    return -total


def windows(seqs: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(context [N, 2W] int, target [N])`` for every residue; 20 pads beyond the ends."""
    contexts, targets = [], []
    for s in seqs:
        padded = np.concatenate([np.full(width, K_AA), s, np.full(width, K_AA)])
        idx = np.arange(len(s))[:, None] + np.r_[0:width, width + 1 : 2 * width + 1][None, :]
        contexts.append(padded[idx])
        targets.append(s)
    return np.concatenate(contexts).astype(np.int32), np.concatenate(targets).astype(np.int32)


def fit_context_model(x: np.ndarray, y: np.ndarray, q: np.ndarray, steps: int, seed: int):
    """Logistic regression ``softmax(W onehot(context) + log q)``, AdamW, batches of 4096."""
    dim = x.shape[1] * (K_AA + 1)
    params = {"w": jnp.zeros((dim, K_AA)), "b": jnp.log(jnp.asarray(q, jnp.float32))}

    def logits(p, ctx):
        return jax.nn.one_hot(ctx, K_AA + 1).reshape(ctx.shape[0], -1) @ p["w"] + p["b"]

    def loss(p, ctx, tgt):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, ctx), tgt).mean()

    opt = optax.adamw(3e-3, weight_decay=1e-2)
    state = opt.init(params)

    @jax.jit
    def step(p, s, ctx, tgt):
        grads = jax.grad(loss)(p, ctx, tgt)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.integers(0, len(y), 4096)
        params, state = step(params, state, x[rows], y[rows])
    return jax.jit(loss), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", nargs="+", required=True, help="the left-out families")
    parser.add_argument("--chains", help="FASTA of chain_sequences.py (second training set)")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--train-sequences", type=int, default=20000)
    parser.add_argument("--test-sequences", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = read_sequences(resolve("sequences", "family_domains_train.fasta"))
    kept, left_out = split_families(data, tuple(args.exclude))

    def pick(seqs, num):
        return [seqs.sequence(i) for i in rng.permutation(len(seqs))[:num]]

    test = pick(left_out, args.test_sequences)
    residues = sum(len(s) for s in test)
    train_sets = {"training families": pick(kept, args.train_sequences)}
    if args.chains:
        chains = read_sequences(args.chains)
        train_sets["structure chains"] = pick(chains, len(chains))
    print(f"left-out families {args.exclude}: {len(test)} sequences, {residues} residues")
    print("| fitted on | training composition | in-sequence composition (best alpha) | "
          f"local context +-{args.width} |")  # fmt: skip
    print("|---|---|---|---|")
    for name, train in train_sets.items():
        q = composition(train)
        unigram = np.exp(-sum(np.log(q[s]).sum() for s in test) / residues)
        urn = {a: np.exp(dirichlet_multinomial_nll(test, q, a) / residues) for a in (20, 80, 320)}
        best = min(urn, key=urn.get)
        x, y = windows(train, args.width)
        loss, params = fit_context_model(x, y, q, args.steps, args.seed)
        context = float(np.exp(loss(params, *windows(test, args.width))))
        print(f"| {name} | {unigram:.2f} | {urn[best]:.2f} (alpha {best}) | {context:.2f} |")


if __name__ == "__main__":
    main()
