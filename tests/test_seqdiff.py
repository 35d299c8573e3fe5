"""Tests for sequence diffusion: the denoiser, the relaxation math, the seqdiff recipe and its CLI."""

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from protgen_jax import alphabet as vocab
from protgen_jax.checkpoint import Checkpointer
from protgen_jax.cli import main
from protgen_jax.config import apply_overrides
from protgen_jax.data.fasta import read_fasta, read_records, write_fasta
from protgen_jax.data.sequences import SequenceSet
from protgen_jax.diffusion import cosine_schedule, normal_kl
from protgen_jax.discrete import relax
from protgen_jax.errors import DataError
from protgen_jax.nn.sequence_denoiser import SequenceDenoiser
from protgen_jax.recipes import recipe_for_model
from protgen_jax.recipes.base import RunDir
from protgen_jax.recipes.seqdiff import (
    RECIPE,
    SeqDiffConfig,
    bucket_groups,
    build_model,
    generate_tokens,
)

TINY = [
    "num_layers=1", "num_heads=2", "model_dim=32", "max_len=32", "buckets=32",
    "tokens_per_batch=128", "eval_batches=1", "eval_every=1", "log_every=1", "num_timesteps=4",
    "warmup_steps=0", "sample_batch=8", "eval_sequences=6", "inpaint_sequences=3",
    "cond_families=2", "cond_samples=2", "embed_dim=24", "devices=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def slice_fasta(shared_data, tmp_path_factory) -> Path:
    """300 real domain sequences from the shared file (every 300th record)."""
    records = read_records(shared_data / "sequences" / "family_domains_train.fasta")
    path = tmp_path_factory.mktemp("data") / "slice.fasta"
    write_fasta(path, [(r.id, r.sequence) for r in records[::300]])
    return path


def _config(method: str, data: Path, *extra: str) -> SeqDiffConfig:
    config = RECIPE.make_config(method)
    return apply_overrides(config, [f"data={data}", "steps=1", *TINY, *extra])


def _command(command: str, run_dir: Path, **given) -> dict:
    return RECIPE.run_command(command, [run_dir], given)


@pytest.fixture(scope="module")
def oadm_run(slice_fasta, tmp_path_factory) -> Path:
    """A two-step OADM run trained through the command line."""
    run_dir = tmp_path_factory.mktemp("runs") / "oadm"
    args = ["--quiet", "train", "oadm", "--data", str(slice_fasta), "--out", str(run_dir)]
    assert main(args + ["--steps", "2"] + [x for s in TINY for x in ("--set", s)]) == 0
    return run_dir


# ------------------------------------------------------------------------------ network


def test_denoiser_padding_invariance_and_family_conditioning():
    B, L = 2, 7
    net = SequenceDenoiser(num_layers=1, num_heads=2, model_dim=16, num_classes=3)
    tokens = jax.random.randint(jax.random.key(0), (B, L), 0, 21)
    mask = jnp.arange(L)[None, :] < jnp.array([[7], [4]])
    t, cond = jnp.array([3, 5]), jnp.array([0, 3])
    params = net.init(jax.random.key(1), tokens, t, mask, cond)
    apply = jax.jit(net.apply)
    out = apply(params, tokens, t, mask, cond)
    assert out.shape == (B, L, vocab.K_AA) and out.dtype == jnp.float32
    changed = tokens.at[1, 4:].set(vocab.PAD)  # padding content must not matter
    np.testing.assert_allclose(apply(params, changed, t, mask, cond), out, atol=1e-5)
    np.testing.assert_array_equal(out[1, 4:], 0.0)
    # adaLN starts as the identity (zero-initialized modulation); perturbed params must see the family.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    noisy = jax.tree.unflatten(
        tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    base, other = (
        apply(noisy, tokens, t, mask, cond),
        apply(noisy, tokens, t, mask, jnp.array([1, 3])),
    )
    assert not np.allclose(other[0], base[0])
    np.testing.assert_allclose(other[1], base[1])


# --------------------------------------------------------------------------- relaxation


def _oracle(target, x_t, t, mask, cond):
    """Logits certain of the true tokens ``target [B, L]`` whatever the noise."""
    return 60.0 * jax.nn.one_hot(target, vocab.K_AA)


def test_embeddings_rounding_and_clamping():
    E = relax.token_embeddings(dim=24, seed=1)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), np.sqrt(24), rtol=1e-5)
    gram = E @ E.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)  # orthogonal rows
    tokens = jax.random.randint(jax.random.key(0), (3, 9), 0, 20)
    mask = jnp.ones((3, 9), bool)
    e = relax.embed(tokens, jnp.asarray(E), mask)
    np.testing.assert_array_equal(relax.round_to_tokens(e + 0.3, jnp.asarray(E)), tokens)
    logits = jax.random.normal(jax.random.key(1), (3, 9, 20))
    clamped = relax.x0_denoiser(Partial(lambda x, t, m, c: logits), E, clamp=True)
    x0 = clamped(e, jnp.zeros(3, jnp.int32), mask, None)
    np.testing.assert_allclose(x0, jnp.asarray(E)[jnp.argmax(logits, -1)], atol=1e-5)


def test_relax_bound_of_an_oracle_is_the_prior_kl_and_a_blind_model_pays_log20():
    E = jnp.asarray(relax.token_embeddings(dim=20))
    schedule = cosine_schedule(20)
    tokens = jax.random.randint(jax.random.key(0), (2, 5), 0, 20)
    mask = jnp.array([[True] * 5, [True] * 3 + [False] * 2])
    oracle = Partial(_oracle, tokens)
    bound = relax.relax_nll_bound(jax.random.key(1), oracle, schedule, E, tokens, mask)
    # Exact x0 -> every Gaussian KL term and the decoder vanish; what remains is KL(q(z_T|e)||N(0,I)).
    ab = schedule.alpha_bars[-1]
    e = relax.embed(tokens, E, mask)
    prior = jnp.sum(
        normal_kl(jnp.sqrt(ab) * e, jnp.log1p(-ab), 0.0, 0.0) * mask[..., None], axis=(1, 2)
    )
    np.testing.assert_allclose(bound, prior, rtol=1e-3, atol=1e-3)
    blind = Partial(lambda x, t, m, c: jnp.zeros(x.shape[:2] + (20,)))
    blind_bound = relax.relax_nll_bound(jax.random.key(1), blind, schedule, E, tokens, mask)
    assert np.all(np.asarray(blind_bound) >= np.array([5, 3]) * np.log(20.0))


def test_relax_loss_and_sampler_with_an_oracle():
    E = jnp.asarray(relax.token_embeddings(dim=20))
    schedule = cosine_schedule(10)
    tokens = jax.random.randint(jax.random.key(0), (3, 6), 0, 20)
    mask = jnp.ones((3, 6), bool)
    target = Partial(_oracle, tokens)
    loss, aux = relax.relax_loss(jax.random.key(2), target, schedule, E, tokens, mask)
    assert loss.shape == (3,)
    np.testing.assert_allclose(aux["ce"], 0.0, atol=1e-4)
    np.testing.assert_allclose(aux["mse"], 0.0, atol=1e-4)
    out = relax.relax_sample(jax.random.key(3), target, schedule, (3, 6), embeddings=E, mask=mask)
    np.testing.assert_array_equal(out, tokens)
    keep = jnp.broadcast_to(jnp.arange(6)[None, :] < 3, (3, 6))
    noise = Partial(lambda x, t, m, c: jnp.zeros(x.shape[:2] + (20,)))
    pad_mask = mask.at[0, 5].set(False)
    filled = relax.relax_sample(
        jax.random.key(4),
        noise,
        schedule,
        (3, 6),
        embeddings=E,
        mask=pad_mask,
        known=tokens,
        known_mask=keep,
    )
    np.testing.assert_array_equal(filled[:, :3], tokens[:, :3])
    assert filled[0, 5] == vocab.PAD and np.all(np.asarray(filled)[pad_mask] < 20)


# ------------------------------------------------------------------------------- recipe


def test_recipe_registry_and_config_checks():
    assert recipe_for_model("oadm") is RECIPE and recipe_for_model("relax") is RECIPE
    config = RECIPE.make_config("d3pm")
    assert config.method == "d3pm" and config.data == "" and config.steps > 0
    assert RECIPE.model_name(config) == "d3pm" and config.steps_per_call == 1
    RECIPE.check(apply_overrides(config, ["transition=uniform"]))
    for bad in (["transition=blosum"], ["buckets=64,32"], ["max_len=100"], ["cfg_drop=1.0"]):
        with pytest.raises(DataError):
            RECIPE.check(apply_overrides(config, bad))
    with pytest.raises(DataError):
        RECIPE.make_config("vae")
    half = build_model(apply_overrides(config, ["dtype=bfloat16"]), 3)
    assert half.module.dtype == jnp.bfloat16


def _toy_set(lengths, labels, seed=0) -> SequenceSet:
    rng = np.random.default_rng(seed)
    pieces = [rng.integers(0, 20, n).astype(np.int8) for n in lengths]
    return SequenceSet(
        ids=tuple(f"F|s{i}" for i in range(len(lengths))),
        family_names=("A", "B", "C"),
        labels=np.asarray(labels, np.int32),
        tokens=np.concatenate(pieces),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )


def test_device_batch_draw_shapes_masks_crops_and_label_drop():
    lengths = [5, 9, 16, 17, 30, 32, 45, 80]
    data = _toy_set(lengths, [0, 1, 2, 0, 1, 2, 0, 1])
    config = apply_overrides(
        SeqDiffConfig(), ["max_len=32", "buckets=16,32", "tokens_per_batch=64", "cfg_drop=0.25"]
    )
    groups = bucket_groups(data, config, null_label=3, cfg_drop=0.25)
    assert [g.batch_size for g in groups] == [4, 2]
    assert [g.weight for g in groups] == [3 / 4, 5 / 2]
    seqs = [data.sequence(i) for i in range(len(data))]
    num_draws = 2000
    for group, width in zip(groups, (16, 32), strict=True):
        arrays = jax.tree.map(jnp.asarray, group.arrays)
        draws = jax.jit(jax.vmap(lambda k, g=group, a=arrays: g.draw(a, k, jnp.int32(0))))(
            jax.random.split(jax.random.key(0), num_draws)
        )
        tokens, mask, cond = (np.asarray(draws[k]) for k in ("tokens", "mask", "cond"))
        assert tokens.shape == mask.shape == (num_draws, group.batch_size, width)
        assert cond.shape == (num_draws, group.batch_size) and tokens.dtype == np.int32
        assert np.all(tokens[~mask] == vocab.PAD) and np.all(tokens[mask] < vocab.K_AA)
        drop_rate = np.mean(cond == 3)
        assert abs(drop_rate - 0.25) < 0.02, drop_rate
        for row, row_mask in zip(
            tokens[:50].reshape(-1, width), mask[:50].reshape(-1, width), strict=True
        ):
            n = int(row_mask.sum())
            assert np.all(row_mask[:n])  # the mask is a prefix
            # the row is a window of a member whose (cropped) length is exactly n
            hits = [
                s
                for s in seqs
                if min(len(s), 32) == n
                and any(np.array_equal(s[o : o + n], row[:n]) for o in range(len(s) - n + 1))
            ]
            assert hits, row
    long_rows = np.asarray(
        jax.vmap(lambda k: groups[1].draw(jax.tree.map(jnp.asarray, groups[1].arrays), k, 0))(
            jax.random.split(jax.random.key(1), 300)
        )["tokens"]
    ).reshape(-1, 32)
    starts = {  # crops of the 80-long sequence: windows at many offsets, all inside it
        o
        for row in long_rows
        for o in range(80 - 32 + 1)
        if np.array_equal(seqs[7][o : o + 32], row)
    }
    assert len(starts) > 10 and max(starts) <= 48
    unknown = bucket_groups(_toy_set([8, 12], [-1, -1]), config, null_label=3, cfg_drop=0.0)[0]
    batch = unknown.draw(jax.tree.map(jnp.asarray, unknown.arrays), jax.random.key(2), 0)
    assert np.all(np.asarray(batch["cond"]) == 3)


def test_extra_sequences_are_drawn_in_their_share_and_unlabelled():
    data = _toy_set([5, 9, 16, 17, 30, 32], [0, 1, 2, 0, 1, 2])
    extra = _toy_set([6, 10, 12, 20, 24, 28, 31, 7], [0, 1, 2, 0, 1, 2, 0, 1])
    config = apply_overrides(
        SeqDiffConfig(),
        ["max_len=32", "buckets=16,32", "tokens_per_batch=64", "extra_fraction=0.3"],
    )
    groups = bucket_groups(data, config, null_label=3, cfg_drop=0.0, extra=extra)
    # bucket 16: 3 training rows (1/6 each of 0.7) + 4 extra (1/8 each of 0.3), batch 4
    assert groups[0].weight == pytest.approx((3 * 0.7 / 6 + 4 * 0.3 / 8) / 4)
    assert groups[1].weight == pytest.approx((3 * 0.7 / 6 + 4 * 0.3 / 8) / 2)
    weights = np.array([g.weight for g in groups])
    drawn = {"extra": 0.0, "all": 0.0}
    for group, p in zip(groups, weights / weights.sum(), strict=True):
        arrays = jax.tree.map(jnp.asarray, group.arrays)
        draws = jax.vmap(lambda k, g=group, a=arrays: g.draw(a, k, jnp.int32(0)))(
            jax.random.split(jax.random.key(3), 4000)
        )
        cond = np.asarray(draws["cond"])  # training rows keep their label (cfg_drop 0)
        drawn["extra"] += p * group.batch_size * np.mean(cond == 3)
        drawn["all"] += p * group.batch_size
    assert abs(drawn["extra"] / drawn["all"] - 0.3) < 0.015


@pytest.mark.parametrize(
    "method, extra",
    [("d3pm", "transition=absorbing"), ("d3pm", "transition=uniform"), ("relax", "clamp=true")],
)
def test_one_step_train_nll_and_inpainting(method, extra, slice_fasta, tmp_path, shared_data):
    if method == "relax":  # with 40 real PDB chains as unlabelled extra data
        with open(shared_data / "structures" / "manifest.csv", newline="") as handle:
            chains = list(csv.DictReader(handle))[:40]
        extra_path = tmp_path.parent / f"{tmp_path.name}_chains.fasta"
        write_fasta(extra_path, [(c["name"], c["seq"]) for c in chains])
        extra = f"{extra} extra_data={extra_path}"
    summary = RECIPE.train(_config(method, slice_fasta, *extra.split()), tmp_path, progress=False)
    assert summary["steps"] == 1 and summary["num_train"] + summary["num_validation"] > 250
    assert summary["num_extra"] == (40 if method == "relax" else 0)
    if method == "relax":
        assert RECIPE.load_data(RunDir(tmp_path)).extra.ids[0] == chains[0]["name"]
    assert json.loads((tmp_path / "run.json").read_text())["family"] == method
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "eval"}
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    run = RECIPE.load_run(tmp_path)
    val = run.data.validation
    seqs = [val.sequence(i)[:20] for i in range(2)]
    tokens = jnp.asarray(np.stack(seqs))
    mask, cond = jnp.ones((2, 20), bool), jnp.array([0, run.model.null_label])
    nll = np.asarray(run.model.nll(run.params, jax.random.key(0), tokens, mask, cond))
    assert nll.shape == (2,) and np.all(np.isfinite(nll)) and np.all(nll > 0)
    logits = run.model.logits_fn(run.params)(
        tokens if method != "relax" else run.model.embeddings[tokens],
        jnp.zeros(2, jnp.int32),
        mask,
        cond,
    )
    if extra == "transition=absorbing":
        assert logits.shape[-1] == vocab.K_ABSORBING and np.all(logits[..., vocab.K_AA :] < -1e8)
    keep = np.arange(20) % 3 != 0
    out = generate_tokens(
        run.model, run.params, jax.random.key(1), [20, 20], [0, -1], 2.0, 1.0, run.config,
        fixed=[(s, keep) for s in seqs], progress=False,
    )  # fmt: skip
    for filled, seq in zip(out, seqs, strict=True):
        np.testing.assert_array_equal(filled[keep], seq[keep])
        assert filled.shape == (20,) and np.all(filled < vocab.K_AA)


def test_time_limit_stops_at_a_checkpoint_and_resume_continues(oadm_run, slice_fasta, tmp_path):
    limited = _config(
        "oadm", slice_fasta, "steps=2", "checkpoint_every=1", "time_limit_minutes=1e-9"
    )
    summary = RECIPE.train(limited, tmp_path, progress=False)
    assert summary["stopped_by_time_limit"] and summary["steps"] == 1
    summary = RECIPE.train(
        apply_overrides(limited, ["time_limit_minutes=0"]), tmp_path, progress=False
    )
    assert not summary["stopped_by_time_limit"] and summary["steps"] == 2
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [1, 2]
    # Two steps straight (the fixture, same config) and one + one resumed give the same params.
    a, b = RECIPE.load_run(oadm_run).params, RECIPE.load_run(tmp_path).params
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, b)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 1, 2, 2]  # (train, eval) per step, nothing duplicated by the resume


def test_sample_unconditional_guided_and_inpaint(oadm_run, tmp_path):
    out = tmp_path / "samples.fasta"
    info = _command("sample", oadm_run, out=out, num=5, length=30, seed=1)
    records = read_fasta(out)
    assert info["num"] == 5 and len(records) == 5
    assert all(len(s) == 30 and set(s) <= set(vocab.AMINO_ACIDS) for _, s in records)
    family = RECIPE.load_run(oadm_run).data.family_names[0]
    guided = tmp_path / "guided.fasta"
    _command("sample", oadm_run, out=guided, num=3, family=family, guidance=2.0)
    records = read_fasta(guided)
    assert len(records) == 3 and all(i.startswith(f"{family}|") for i, _ in records)
    assert all(1 <= len(s) <= 32 for _, s in records)
    template = tmp_path / "masked.fasta"
    template.write_text(f">{family}|t1\nMKV##LLA#G\n>free\n##W\n")
    filled = tmp_path / "filled.fasta"
    _command("sample", oadm_run, out=filled, inpaint=template, seed=2)
    (_, a), (_, b) = read_fasta(filled)
    assert len(a) == 10 and a[:3] == "MKV" and a[5:8] == "LLA" and a[9] == "G" and b[2] == "W"
    assert set(a + b) <= set(vocab.AMINO_ACIDS)
    with pytest.raises(DataError, match="not one of"):
        _command("sample", oadm_run, out=out, num=1, family="NOPE")
    with pytest.raises(DataError, match="max_len"):
        _command("sample", oadm_run, out=out, num=1, length=33)
    with pytest.raises(DataError, match="--guidance needs --family"):
        _command("sample", oadm_run, out=out, num=1, guidance=0.0)
    with pytest.raises(DataError, match="--temperature"):
        _command("sample", oadm_run, out=out, temperature=-1.0)


def test_sample_options_reject_flags_that_do_not_apply():
    with pytest.raises(DataError, match="--motif"):
        RECIPE.options("sample", {"out": "x.fasta", "motif": "x"})
    with pytest.raises(DataError, match="--num"):
        RECIPE.options("sample", {"out": "x.fasta", "num": 0})
    opts = RECIPE.options("sample", {"out": "x.fasta", "temperature": 0, "guidance": 0})
    assert opts.temperature == 0.0 and opts.guidance == 0.0 and opts.num == 100


def _noisy(params, scale=0.3):
    """Params with every leaf perturbed, so the zero-initialized adaLN sees the family label."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    return jax.tree.unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )


def test_guidance_zero_is_unconditional_sampling(oadm_run, tmp_path):
    run = RECIPE.load_run(oadm_run)
    params, model = _noisy(run.params), run.model
    B, L = 6, 16
    mask = jnp.ones((B, L), bool)
    family = jnp.zeros(B, jnp.int32)
    null = jnp.full(B, model.null_label, jnp.int32)
    key = jax.random.key(3)
    zero = model.generate(params, key, (B, L), mask, family, guidance=0.0)
    uncond = model.generate(params, key, (B, L), mask, null, guidance=1.0)
    cond = model.generate(params, key, (B, L), mask, family, guidance=1.0)
    np.testing.assert_array_equal(zero, uncond)
    assert not np.array_equal(cond, uncond)  # the label matters for these params
    # Through the command: --guidance 0 with a family = no family, same seed and lengths.
    name = run.data.family_names[0]
    a, b = tmp_path / "a.fasta", tmp_path / "b.fasta"
    _command("sample", oadm_run, out=a, num=4, length=12, family=name, guidance=0.0, seed=4)
    _command("sample", oadm_run, out=b, num=4, length=12, seed=4)
    assert [s for _, s in read_fasta(a)] == [s for _, s in read_fasta(b)]


class _FixedLogits:
    """A stand-in network: ``apply(params, x_t, t, mask, cond) = params["logits"]`` per position."""

    dropout_rate = 0.0

    def apply(self, params, x_t, t, mask, cond):
        return jnp.broadcast_to(params["logits"], x_t.shape[:2] + params["logits"].shape[-1:])


@pytest.mark.parametrize("method", ["oadm", "d3pm", "relax"])
def test_temperature_zero_is_the_argmax(method, slice_fasta):
    import dataclasses

    config = _config(method, slice_fasta, "num_timesteps=6", "clamp=false")
    model = dataclasses.replace(build_model(config, 3), module=_FixedLogits())
    B, L = 4, 12
    logits = jax.random.normal(jax.random.key(0), (L, vocab.K_AA))
    params = {"logits": logits}
    mask = jnp.ones((B, L), bool).at[1, 9:].set(False)
    cond = jnp.full(B, model.null_label, jnp.int32)
    best = np.broadcast_to(np.argmax(np.asarray(logits), -1), (B, L))
    for seed in range(2):
        out = np.asarray(
            model.generate(params, jax.random.key(seed), (B, L), mask, cond, temperature=0.0)
        )
        np.testing.assert_array_equal(out[np.asarray(mask)], best[np.asarray(mask)])
        assert np.all(out[~np.asarray(mask)] == vocab.PAD)
    if method != "relax":  # (the relaxation rounds its mean x0 estimate: argmax-like already)
        hot = np.asarray(model.generate(params, jax.random.key(0), (B, L), mask, cond))
        assert not np.array_equal(hot[np.asarray(mask)], best[np.asarray(mask)])


def test_cli_sample_and_evaluate(oadm_run, tmp_path, capsys):
    fasta = tmp_path / "s.fasta"
    _command("sample", oadm_run, num=3, length=12, out=fasta)
    assert [len(s) for _, s in read_fasta(fasta)] == [12, 12, 12]
    out = tmp_path / "eval.json"
    _command("evaluate", oadm_run, num=4, out=out)
    saved = json.loads(out.read_text())
    for key in ("perplexity", "perplexity_unconditional", "baselines", "unconditional",
                "conditional", "inpainting"):  # fmt: skip
        assert key in saved
    assert saved["data"] == "validation split" and saved["num_sequences_evaluated"] == 6
    assert saved["complete"] is True and saved["pending"] == []
    assert saved["baselines"]["uniform"] == pytest.approx(20.0)
    assert saved["baselines"]["family_unigram"] < saved["baselines"]["unigram"] < 20.0
    assert 1.0 < saved["perplexity"] < 200.0
    for stats in saved["unconditional"].values():
        assert 0 <= stats["composition_tv_uniref50"] <= 1 and 0 <= stats["diversity"] <= 1
        assert 0 <= stats["novelty_identity_mean"] <= 1 and stats["num"] == 4
    assert {"fraction_assigned_guidance_1", "fraction_assigned_guidance_2"} <= saved[
        "conditional"
    ].keys()
    for setting in ("random_15", "span_15", "random_30", "span_30"):
        entry = saved["inpainting"][setting]
        assert entry["unmasked_positions_kept"] and 0 <= entry["model_recovery"] <= 1
        assert 0 <= entry["model_recovery_greedy"] <= 1

    # Any FASTA: its own residues (a 40-long record is scored as two chunks of <= max_len = 32).
    other = tmp_path / "other.fasta"
    other.write_text(">NEWFAM|a\nACDEFGHIKLMNPQRSTVWYACDEFGHIKLMNPQRSTV\n>b\nMKVLLAG\n")
    _command("evaluate", oadm_run, data=other, num=0, out=out)
    saved = json.loads(out.read_text())
    assert saved["num_sequences_evaluated"] == 2 and saved["num_with_known_family"] == 0
    assert saved["num_residues"] == 45 and saved["num_chunks"] == 3
    assert "perplexity_unconditional" not in saved and "inpainting" not in saved
    capsys.readouterr()
    bad = tmp_path / "bad.txt"
    bad.write_text("not a fasta file\n")
    with pytest.raises(DataError):
        _command("evaluate", oadm_run, data=bad, out=out)
    with pytest.raises(DataError, match="--guidance needs --family"):
        _command("sample", oadm_run, guidance=2.0, out=fasta)
    with pytest.raises(DataError, match="--num must be 0"):
        _command("evaluate", oadm_run, num=1, out=out)
    assert main(["--quiet", "train", "d3pm", "--out", str(tmp_path / "r2"),
                 "--set", "transition=blosum"]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err


def test_evaluate_bounds_the_scored_sequences_and_keeps_finished_stages(
    oadm_run, tmp_path, monkeypatch
):
    from protgen_jax.recipes.seqdiff import commands

    out = tmp_path / "eval.json"
    report = _command("evaluate", oadm_run, num=0, sequences=2, out=out, quiet=True)
    saved = json.loads(out.read_text())
    assert saved["num_sequences_evaluated"] == report["num_sequences_evaluated"] == 2
    assert saved["complete"] is True and saved["pending"] == []
    assert saved["num_sequences_in_file"] > 2 and "perplexity" in saved

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "conditional_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _command("evaluate", oadm_run, num=4, sequences=3, out=out, quiet=True)
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["pending"] == ["conditional", "inpainting"]
    assert saved["num_sequences_evaluated"] == 3 and 1.0 < saved["perplexity"] < 200.0
    assert saved["unconditional"]["samples"]["num"] == 4
    assert "conditional" not in saved and "inpainting" not in saved
