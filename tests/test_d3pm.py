"""Tests for protgen_jax.discrete.d3pm (and the token vocabulary) against NumPy computations."""

import ast
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax import alphabet as tokens
from protgen_jax.discrete import d3pm

T = 10


def _uniform(num_steps=T, K=tokens.K_AA):
    return d3pm.uniform_transitions(d3pm.cosine_betas(num_steps), K)


def _absorbing(num_steps=T):
    return d3pm.absorbing_transitions(d3pm.absorbing_betas(num_steps))


def _random_schedule(rng, num_steps=4, K=4):
    """Non-symmetric random row-stochastic one-step matrices: catches transposition mistakes."""
    q = rng.dirichlet(np.ones(K), size=(num_steps, K)) * 0.5 + 0.5 * np.eye(K)
    return d3pm.schedule_from_onestep(q, np.full(K, 1.0 / K)), q


def _explicit_cumulative(q):
    """Qbar_t = Q_0 ... Q_t by a loop of float64 products, independent of the library."""
    out, running = [], np.eye(q.shape[-1])
    for t in range(q.shape[0]):
        running = running @ q[t]
        out.append(running)
    return np.stack(out)


def _softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _np_posterior(q, x0_probs, x_t, t):
    """q(x_{t-1} | x_t, x0) by Bayes: sum_x0 p(x0) Qbar_{t-1}[x0, k] Q_t[k, x_t], normalized over k."""
    qbar = _explicit_cumulative(q)
    unnorm = (x0_probs @ qbar[t - 1]) * q[t][:, x_t]
    return unnorm / unnorm.sum()


def _constant_logits_fn(log_p, x_t, t, mask, cond):
    """A model whose x0 prediction is the fixed categorical ``log_p`` [K] at every position."""
    return jnp.broadcast_to(log_p, x_t.shape + log_p.shape)


def _oracle_logits_fn(target, x_t, t, mask, cond, K):
    """A model that knows x0 = target [B, L]: logits 50 * one_hot(target)."""
    return 50.0 * jax.nn.one_hot(target, K)


def test_discrete_modules_import_neither_flax_nor_orbax():
    package = Path(d3pm.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("flax", "orbax"), (path.name, name)


def test_absorbing_schedule_absorbs_into_mask_and_never_visits_gap():
    schedule = d3pm.absorbing_transitions(d3pm.absorbing_betas(T))
    assert schedule.num_classes == tokens.K_ABSORBING == tokens.MASK + 1
    q_all = np.asarray(schedule.q_cumulative)  # [T, K, K]
    np.testing.assert_allclose(q_all[-1, :, tokens.MASK], 1.0, atol=1e-6)  # every row ends at MASK
    # a residue's mass stays on itself or moves to MASK: never to GAP or another residue
    residues = q_all[:, : tokens.K_AA]
    np.testing.assert_allclose(residues[:, :, tokens.GAP], 0.0)
    stay = residues[:, np.arange(tokens.K_AA), np.arange(tokens.K_AA)]
    np.testing.assert_allclose(stay + residues[:, :, tokens.MASK], 1.0, atol=1e-6)


@pytest.mark.parametrize("make", [_uniform, _absorbing])
def test_rows_sum_to_one_and_first_cumulative_is_first_step(make):
    schedule = make()
    np.testing.assert_allclose(np.sum(schedule.q_onestep, -1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.sum(schedule.q_cumulative, -1), 1.0, atol=1e-6)
    assert schedule.q_onestep.dtype == jnp.float32
    # Qbar_0 = Qbar_{-1} Q_0 with Qbar_{-1} = I.
    np.testing.assert_allclose(schedule.q_cumulative[0], schedule.q_onestep[0], atol=1e-7)
    assert schedule.num_steps == T


def test_stationary_reached_at_last_step():
    uniform = _uniform()
    np.testing.assert_allclose(uniform.q_cumulative[-1], 1.0 / tokens.K_AA, atol=1e-3)
    # Not yet mixed half-way, so the check above is not vacuous.
    assert np.max(uniform.q_cumulative[T // 2]) > 0.5
    absorbing = _absorbing()
    np.testing.assert_allclose(absorbing.q_cumulative[-1][:, tokens.MASK], 1.0, atol=1e-6)
    # Absorbing schedule: P(absorbed after step t) = (t + 1) / T.
    absorbed = np.asarray(absorbing.q_cumulative[:, 0, tokens.MASK])
    np.testing.assert_allclose(absorbed, (np.arange(T) + 1) / T, atol=1e-6)


@pytest.mark.parametrize("kind", ["uniform", "absorbing"])
def test_closed_form_cumulative_equals_explicit_product(kind):
    betas = d3pm.cosine_betas(T) if kind == "uniform" else d3pm.absorbing_betas(T)
    K = 5
    eye = np.eye(K)
    if kind == "uniform":
        fast = d3pm.uniform_transitions(betas, K)
        step = [(1 - b) * eye + b * np.ones((K, K)) / K for b in betas]
    else:
        fast = d3pm.absorbing_transitions(betas, K, mask_index=K - 1)
        step = [(1 - b) * eye + b * np.outer(np.ones(K), eye[K - 1]) for b in betas]
    q = np.stack(step)
    np.testing.assert_allclose(fast.q_onestep, q, atol=1e-7)
    np.testing.assert_allclose(fast.q_cumulative, _explicit_cumulative(q), atol=1e-6)
    slow = d3pm.schedule_from_onestep(q, fast.stationary)
    np.testing.assert_allclose(slow.q_cumulative, fast.q_cumulative, atol=1e-6)


def test_q_sample_is_deterministic_and_matches_q_probs():
    schedule = _uniform(K=4)
    x0 = jnp.array([[0, 1, 2, 3]] * 2, jnp.int32)
    t = jnp.array([2, 7], jnp.int32)
    noise = jax.random.uniform(jax.random.key(0), (2, 4, 4))
    np.testing.assert_array_equal(
        d3pm.q_sample(schedule, x0, t, noise), d3pm.q_sample(schedule, x0, t, noise)
    )
    # Frequencies over N draws against the rows of Qbar_t.
    n = 20000
    x0 = jnp.full((1, n), 1, jnp.int32)
    for step in (0, 4, 9):
        t = jnp.array([step], jnp.int32)
        draws = np.asarray(d3pm.q_sample_key(jax.random.key(step), schedule, x0, t))[0]
        freq = np.bincount(draws, minlength=4) / n
        expected = np.asarray(schedule.q_cumulative[step, 1])
        tol = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-4
        assert np.all(np.abs(freq - expected) < tol), (step, freq, expected)


def test_posterior_matches_brute_force_bayes():
    rng = np.random.default_rng(0)
    schedule, q = _random_schedule(rng)
    K = q.shape[-1]
    x0 = jnp.array([[0, 1, 2, 3, 1]], jnp.int32)
    x_t = jnp.array([[2, 1, 0, 3, 3]], jnp.int32)
    x0_logits = jnp.asarray(rng.normal(size=(1, 5, K)), jnp.float32)
    for step in range(1, q.shape[0]):
        t = jnp.array([step], jnp.int32)
        got_tokens = jax.nn.softmax(d3pm.q_posterior_logits(schedule, x0, x_t, t), -1)
        got_logits = jax.nn.softmax(d3pm.q_posterior_logits(schedule, x0_logits, x_t, t), -1)
        for pos in range(5):
            onehot = np.eye(K)[int(x0[0, pos])]
            want = _np_posterior(q, onehot, int(x_t[0, pos]), step)
            np.testing.assert_allclose(got_tokens[0, pos], want, atol=1e-5)
            probs = _softmax(np.asarray(x0_logits[0, pos], np.float64))
            want = _np_posterior(q, probs, int(x_t[0, pos]), step)
            np.testing.assert_allclose(got_logits[0, pos], want, atol=1e-5)
    # t = 0: the posterior is the x0 distribution itself (Qbar_{-1} = I).
    t0 = jnp.array([0], jnp.int32)
    got = jax.nn.softmax(d3pm.q_posterior_logits(schedule, x0, x_t, t0), -1)
    np.testing.assert_allclose(got[0], np.eye(K)[np.asarray(x0[0])], atol=1e-6)
    got = jax.nn.softmax(d3pm.q_posterior_logits(schedule, x0_logits, x_t, t0), -1)
    np.testing.assert_allclose(got, jax.nn.softmax(x0_logits, -1), atol=1e-6)


def test_reverse_step_is_exact_for_independent_data():
    """With p~(x0|x_t) = p_data the reverse kernel is the true q(x_{t-1} | x_t) for i.i.d. tokens."""
    rng = np.random.default_rng(1)
    schedule, q = _random_schedule(rng)
    K = q.shape[-1]
    p_data = np.array([0.5, 0.25, 0.15, 0.1])
    logits_fn = functools.partial(_constant_logits_fn, jnp.log(jnp.asarray(p_data, jnp.float32)))
    x_t = jnp.arange(K, dtype=jnp.int32)[None, :]
    mask = jnp.ones_like(x_t, bool)
    qbar = _explicit_cumulative(q)
    for step in range(1, q.shape[0]):
        t = jnp.array([step], jnp.int32)
        got = jax.nn.softmax(d3pm.reverse_logits(schedule, logits_fn, x_t, t, mask), -1)
        for x in range(K):
            joint = (p_data @ qbar[step - 1]) * q[step][:, x]  # q(x_{t-1} = k, x_t = x)
            np.testing.assert_allclose(got[0, x], joint / joint.sum(), atol=1e-5)


@pytest.mark.parametrize("make", [_uniform, _absorbing])
def test_hybrid_loss_oracle_is_zero_and_random_model_positive(make):
    schedule = make()
    K = schedule.num_classes
    B, L = 6, 7
    key_x, key_t, key_s, key_m = jax.random.split(jax.random.key(2), 4)
    x0 = jax.random.randint(key_x, (B, L), 0, tokens.K_AA)
    t = jnp.array([0, 1, 3, 5, 8, T - 1], jnp.int32)
    x_t = d3pm.q_sample_key(key_s, schedule, x0, t)
    mask = jnp.arange(L)[None, :] < jnp.array([7, 7, 5, 6, 7, 3])[:, None]
    oracle = functools.partial(_oracle_logits_fn, x0, K=K)
    loss, aux = d3pm.hybrid_loss(schedule, oracle, x0, t, x_t, mask)
    assert loss.shape == (B,)
    np.testing.assert_allclose(aux["vb"], 0.0, atol=1e-4)
    np.testing.assert_allclose(aux["num_tokens"], [7, 7, 5, 6, 7, 3])

    random_logits = jax.random.normal(key_m, (B, L, K))
    model = lambda *args: random_logits  # noqa: E731
    loss, aux = d3pm.hybrid_loss(schedule, model, x0, t, x_t, mask, hybrid_lambda=0.5)
    np.testing.assert_allclose(loss, aux["vb"] + 0.5 * aux["ce"], rtol=1e-6)
    # The t = 0 and t = T-1 terms are positive for both noise types (at T-1 every token is noised).
    assert aux["vb"][0] > 0.1 and aux["vb"][-1] > 0.1
    if make is _uniform:
        assert np.all(aux["vb"] > 1e-3)
    # Independent NumPy check of the bound term and of the cross-entropy.
    log_p = np.log(_softmax(np.asarray(random_logits, np.float64)))
    q = np.asarray(schedule.q_onestep, np.float64)
    x0_np, x_t_np, t_np, mask_np = (np.asarray(a) for a in (x0, x_t, t, mask))
    for b in range(B):
        vb, ce = 0.0, 0.0
        for pos in range(int(mask_np[b].sum())):
            true_x0, xt, step = x0_np[b, pos], x_t_np[b, pos], t_np[b]
            ce -= log_p[b, pos, true_x0]
            if step == 0:
                vb -= log_p[b, pos, true_x0]
                continue
            q_true = _np_posterior(q, np.eye(K)[true_x0], xt, step)
            p_pred = _np_posterior(q, np.exp(log_p[b, pos]), xt, step)
            support = q_true > 0
            vb += np.sum(q_true[support] * np.log(q_true[support] / p_pred[support]))
        np.testing.assert_allclose(aux["vb"][b], vb, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(aux["ce"][b], ce, rtol=1e-5)
    # Padding is ignored: changing tokens there changes nothing.
    x0_padded = jnp.where(mask, x0, tokens.PAD)
    loss_padded, _ = d3pm.hybrid_loss(schedule, model, x0_padded, t, x_t, mask, hybrid_lambda=0.5)
    np.testing.assert_allclose(loss_padded, loss, rtol=1e-6)


def test_prior_kl():
    x0 = jnp.array([[0, 5, 19, 3]], jnp.int32)
    mask = jnp.array([[True, True, True, False]])
    np.testing.assert_allclose(d3pm.prior_kl(_absorbing(), x0, mask), 0.0, atol=1e-6)
    assert float(d3pm.prior_kl(_uniform(), x0, mask)[0]) < 3e-3
    K, beta = 4, 0.3
    short = d3pm.uniform_transitions(np.full(3, beta), K)
    keep = (1 - beta) ** 3
    row = np.full(K, (1 - keep) / K)
    row[0] += keep
    want = 2 * np.sum(row * np.log(row * K))  # two tokens, each with the same row up to permutation
    got = d3pm.prior_kl(short, jnp.array([[0, 3]], jnp.int32), jnp.ones((1, 2), bool))
    np.testing.assert_allclose(got, [want], rtol=1e-5)


def _np_expected_vlb(q, p_data, x):
    """E over the forward chain of the D3PM bound for one token x with the p_data model (NumPy)."""
    qbar = _explicit_cumulative(q)
    K = q.shape[-1]
    prior = qbar[-1][x]
    total = np.sum(prior * np.log(prior * K))  # stationary is uniform
    total += -np.log(p_data[x])  # t = 0 term: p~ = p_data regardless of x_0
    for step in range(1, q.shape[0]):
        for xt in range(K):
            q_true = _np_posterior(q, np.eye(K)[x], xt, step)
            p_pred = _np_posterior(q, p_data, xt, step)
            support = q_true > 0
            kl = np.sum(q_true[support] * np.log(q_true[support] / p_pred[support]))
            total += qbar[step][x, xt] * kl
    return total


def test_vlb_nll_matches_numpy_expectation():
    K, B, L = 4, 128, 8
    q_betas = np.array([0.2, 0.4, 0.6, 0.999])
    schedule = d3pm.uniform_transitions(q_betas, K)
    q = np.asarray(schedule.q_onestep, np.float64)
    p_data = np.array([0.55, 0.2, 0.15, 0.1])
    logits_fn = functools.partial(_constant_logits_fn, jnp.log(jnp.asarray(p_data, jnp.float32)))
    x0_row = np.array([0, 1, 2, 3, 0, 0, 1, 2])
    x0 = jnp.asarray(np.tile(x0_row, (B, 1)), jnp.int32)
    mask = jnp.ones((B, L), bool).at[:, -1].set(False)
    nll = np.asarray(d3pm.vlb_nll(jax.random.key(3), schedule, logits_fn, x0, mask))
    assert nll.shape == (B,)
    per_token = [_np_expected_vlb(q, p_data, int(x)) for x in x0_row[:-1]]
    want = sum(per_token)
    assert want >= -np.sum(np.log(p_data[x0_row[:-1]]))  # a bound on the true NLL
    tol = 5 * nll.std() / np.sqrt(B)
    assert abs(nll.mean() - want) < tol, (nll.mean(), want, tol)


@pytest.mark.parametrize("make", [_uniform, _absorbing])
def test_sampler_oracle_and_inpainting(make):
    schedule = make()
    B, L = 3, 9
    target = jax.random.randint(jax.random.key(4), (B, L), 0, tokens.K_AA)
    mask = jnp.arange(L)[None, :] < jnp.array([9, 6, 4])[:, None]
    oracle = jax.tree_util.Partial(
        functools.partial(_oracle_logits_fn, K=schedule.num_classes), target
    )
    out = d3pm.d3pm_sample(jax.random.key(5), oracle, schedule, (B, L), mask=mask)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, jnp.where(mask, target, tokens.PAD))

    known_mask = jnp.zeros((B, L), bool).at[:, ::3].set(True)
    known = (target + 1) % tokens.K_AA
    out = d3pm.d3pm_sample(
        jax.random.key(6), oracle, schedule, (B, L), mask=mask, known=known, known_mask=known_mask
    )
    want = jnp.where(known_mask, known, target)
    np.testing.assert_array_equal(out, jnp.where(mask, want, tokens.PAD))


def test_sampler_compiles_once_across_keys_and_params():
    schedule = _absorbing(num_steps=4)
    traces = []

    def counting_oracle(target, x_t, t, mask, cond):
        traces.append(1)
        return 50.0 * jax.nn.one_hot(target, tokens.K_ABSORBING)

    shape = (2, 5)
    first = jnp.zeros(shape, jnp.int32)
    second = jnp.full(shape, 7, jnp.int32)
    out1 = d3pm.d3pm_sample(
        jax.random.key(0), jax.tree_util.Partial(counting_oracle, first), schedule, shape
    )
    n_traces = len(traces)
    out2 = d3pm.d3pm_sample(
        jax.random.key(1), jax.tree_util.Partial(counting_oracle, second), schedule, shape
    )
    assert len(traces) == n_traces >= 1
    np.testing.assert_array_equal(out1, first)
    np.testing.assert_array_equal(out2, second)


def test_hybrid_loss_gradients_finite_and_jit_matches_eager():
    schedule = _absorbing(num_steps=4)
    B, L, K = 3, 5, schedule.num_classes
    x0 = jax.random.randint(jax.random.key(7), (B, L), 0, tokens.K_AA)
    t = jnp.array([0, 2, 3], jnp.int32)
    x_t = d3pm.q_sample_key(jax.random.key(8), schedule, x0, t)
    mask = jnp.ones((B, L), bool).at[1, 3:].set(False)

    def total_loss(logits):
        model = lambda *args: logits  # noqa: E731
        return jnp.sum(d3pm.hybrid_loss(schedule, model, x0, t, x_t, mask)[0])

    for scale in (1.0, 60.0):  # ordinary and near one-hot predictions
        logits = scale * jax.random.normal(jax.random.key(9), (B, L, K))
        value, grad = jax.value_and_grad(total_loss)(logits)
        assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(jax.jit(total_loss)(logits), value, rtol=1e-5)
        np.testing.assert_array_equal(grad[1, 3:], 0.0)  # padding gets no gradient
