"""The shared recipe skeleton: key tree, typed options, device-side training, data parallelism, the
NaN guard, resume and dtype, on a toy family (linear regression) that fills in the hooks."""

import json
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from protgen_jax import keys
from protgen_jax.errors import DataError, TrainingError
from protgen_jax.fit import BatchGroup, TrainConfig, compute_dtype, read_metrics
from protgen_jax.recipes.base import Recipe, RunDir, padded_map
from protgen_jax.recipes.options import Option, resolve_options
from protgen_jax.train import TrainState, make_scan_train_step

# ----------------------------------------------------------------------------------- key tree


def test_named_keys_are_fold_in_by_crc32_and_never_collide_across_seeds():
    root = jax.random.key(3)
    assert keys.name_constant("train") == 0x5C66E4A3  # CRC-32 of b"train"
    expected = jax.random.fold_in(root, 0x5C66E4A3)
    assert np.array_equal(
        jax.random.key_data(keys.named(root, "train")), jax.random.key_data(expected)
    )
    draws = {
        (seed, name): float(jax.random.uniform(keys.named(keys.root_key(seed), name)))
        for seed in (0, 1)
        for name in ("init", "train", "eval")
    }
    assert len(set(draws.values())) == 6  # no stream of seed s is a stream of seed s + 1
    nested = keys.named(root, "evaluate", "samples")
    assert np.array_equal(
        jax.random.key_data(nested),
        jax.random.key_data(keys.named(keys.named(root, "evaluate"), "samples")),
    )
    with pytest.raises(ValueError):
        keys.root_key(-1)


# ----------------------------------------------------------------------------------- options

DECLARED = (
    Option("num", int, 100, "how many", low=1),
    Option("temperature", float, 1.0, "T", low=0),
    Option("sampler", str, "ddpm", "which", choices=("ddpm", "ddim")),
    Option("greedy", bool, False, "argmax"),
)


def test_options_zero_is_a_value_and_defaults_fill_what_was_not_given():
    opts = resolve_options("toy", "sample", DECLARED, {"out": "x", "temperature": "0"})
    assert opts.temperature == 0.0 and opts.num == 100 and opts.greedy is False
    assert opts.seed is None and opts.out == "x"
    with pytest.raises(DataError, match=r"--num must be >= 1, got 0"):
        resolve_options("toy", "sample", DECLARED, {"out": "x", "num": 0})
    with pytest.raises(DataError, match=r"--sampler must be one of ddpm, ddim"):
        resolve_options("toy", "sample", DECLARED, {"out": "x", "sampler": "euler"})
    with pytest.raises(DataError, match=r"--num: expected int"):
        resolve_options("toy", "sample", DECLARED, {"out": "x", "num": "many"})
    with pytest.raises(DataError, match=r"needs --out"):
        resolve_options("toy", "sample", DECLARED, {})


def test_a_flag_of_another_family_is_an_error_naming_flag_and_family():
    with pytest.raises(
        DataError, match=r"--guidance, --motif does not apply to sample for a 'toy'"
    ):
        resolve_options("toy", "sample", DECLARED, {"out": "x", "motif": "A", "guidance": 0.0})


# ----------------------------------------------------------------------------------- scan step


def _regression_loss(params, batch, key):
    del key
    err = batch["x"] @ params["w"] - batch["y"]
    return jnp.mean(err**2), {"abs_err": jnp.mean(jnp.abs(err))}


def _draw(arrays, key, step):
    rows = jax.random.randint(key, (8,), 0, arrays["x"].shape[0])
    return {"x": arrays["x"][rows], "y": arrays["y"][rows]}


def test_scan_step_n_updates_per_call_equal_n_calls_of_one():
    rng = np.random.default_rng(0)
    data = {"x": jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)}
    data["y"] = data["x"] @ jnp.array([1.0, -2.0, 0.5])
    opt = optax.adam(0.1)

    def fresh():
        return TrainState.create(lambda p, x: x, {"w": jnp.zeros(3)}, opt, ema_decay=0.9)

    key = jax.random.key(1)
    four = make_scan_train_step(_regression_loss, opt, _draw, steps_per_call=4)
    one = make_scan_train_step(_regression_loss, opt, _draw, steps_per_call=1)
    a, metrics = four(fresh(), data, key)
    b = fresh()
    losses = []
    for _ in range(4):
        b, m = one(b, data, key)
        losses.append(float(m["loss"][0]))
    assert int(a.step) == int(b.step) == 4 and metrics["loss"].shape == (4,)
    np.testing.assert_allclose(a.params["w"], b.params["w"], rtol=1e-6)
    np.testing.assert_allclose(a.ema_params["w"], b.ema_params["w"], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-6)


# ----------------------------------------------------------------------------------- a toy family


@dataclass(frozen=True)
class ToyConfig(TrainConfig):
    steps: int = 12
    log_every: int = 2
    eval_every: int = 4
    checkpoint_every: int = 4
    steps_per_call: int = 4
    batch_size: int = 16
    learning_rate: float = 0.05
    poison_after: int = -1  # >= 0: the loss becomes NaN from this update on (tests the guard)
    nan_grad_at: int = -1  # >= 0: this update's gradient is NaN, its loss finite


class Toy(Recipe):
    family = "toy"
    models = ("toy",)
    config_type = ToyConfig
    curve_keys = ("loss", "val_mse")

    def prepare(self, config, progress):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 4)).astype(np.float32)
        return {"x": x, "y": (x @ np.array([1.0, -1.0, 2.0, 0.0])).astype(np.float32)}

    def save_data(self, run, data):
        np.savez(run.file(self.data_file), **data)

    def load_data(self, run):
        z = np.load(run.file(self.data_file))
        return {"x": z["x"], "y": z["y"]}

    def build_model(self, config, data):
        return compute_dtype(config)

    def apply_fn(self, model):
        return lambda params, x: x @ params["w"]

    def init_params(self, model, config, data, key):
        return {"w": jnp.zeros(4, jnp.float32)}

    def optimizer(self, config):
        return optax.sgd(config.learning_rate)

    def loss_fn(self, model, config, data):
        def loss(params, batch, key):
            pred = batch["x"].astype(model) @ params["w"].astype(model)
            mse = jnp.mean((pred.astype(jnp.float32) - batch["y"]) ** 2)
            if config.poison_after >= 0:
                mse = jnp.where(batch["step"] >= config.poison_after, jnp.nan, mse)
            if config.nan_grad_at >= 0:  # 0 * sqrt(0): the value 0, the gradient 0 * inf = NaN
                at = jnp.where(batch["step"] == config.nan_grad_at, 0.0, 1.0)
                mse = mse + 0.0 * jnp.sqrt(at + jnp.sum(0.0 * params["w"]))
            return mse, {}

        return loss

    def batches(self, config, data):
        size = config.batch_size

        def draw(arrays, key, step):
            rows = jax.random.randint(key, (size,), 0, arrays["x"].shape[0])
            return {"x": arrays["x"][rows], "y": arrays["y"][rows], "step": step}

        return [BatchGroup(data, draw, size)]

    def make_eval(self, model, config, data, key):
        def eval_fn(params, step):
            return {
                "val_mse": float(np.mean((data["x"] @ np.asarray(params["w"]) - data["y"]) ** 2))
            }

        return eval_fn


TOY = Toy()


def _losses(run):
    return [r["loss"] for r in read_metrics(RunDir(run).metrics) if r["split"] == "train"]


def test_toy_training_writes_the_run_folder_and_learns(tmp_path):
    summary = TOY.train(ToyConfig(devices=1), tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    for path in (run.config, run.info, run.summary, run.metrics, run.curves, run.file("data.npz")):
        assert path.exists(), path
    info = json.loads(run.info.read_text())
    assert info["family"] == "toy" and info["devices"] == 1 and info["steps_per_call"] == 4
    assert summary["steps"] == 12 and not summary["stopped_by_time_limit"]
    records = read_metrics(run.metrics)
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in records if r["split"] == "eval"] == [4, 8, 12]
    losses = _losses(tmp_path / "run")
    assert losses[-1] < 0.5 * losses[0]
    loaded = TOY.load_run(tmp_path / "run")
    assert loaded.config == ToyConfig(devices=1) and float(jnp.abs(loaded.params["w"]).sum()) > 0


def test_steps_per_call_and_resume_do_not_change_the_updates(tmp_path):
    """Update s draws from fold_in(train_key, s): 1 or 4 updates per call, or a run stopped at a
    checkpoint and resumed, give the same parameters."""
    params = []
    for name, per_call in (("one", 1), ("four", 4)):
        TOY.train(ToyConfig(devices=1, steps_per_call=per_call), tmp_path / name, progress=False)
        params.append(np.asarray(TOY.load_run(tmp_path / name).params["w"]))
    TOY.train(ToyConfig(devices=1, steps=8), tmp_path / "resumed", progress=False)
    TOY.train(ToyConfig(devices=1), tmp_path / "resumed", progress=False)
    params.append(np.asarray(TOY.load_run(tmp_path / "resumed").params["w"]))
    np.testing.assert_allclose(params[0], params[1], rtol=1e-5)
    np.testing.assert_allclose(params[0], params[2], rtol=1e-6)


def test_data_parallel_training_on_four_devices_matches_one_device(tmp_path):
    assert jax.local_device_count() >= 4  # tests run with 8 fake CPU devices (conftest)
    TOY.train(ToyConfig(devices=1), tmp_path / "d1", progress=False)
    TOY.train(ToyConfig(devices=4), tmp_path / "d4", progress=False)
    assert json.loads(RunDir(tmp_path / "d4").info.read_text())["devices"] == 4
    np.testing.assert_allclose(_losses(tmp_path / "d1"), _losses(tmp_path / "d4"), rtol=1e-4)
    # devices=0 takes as many as divide the batch (16 on 8 devices: all 8); 6 divides no 16-batch
    TOY.train(ToyConfig(steps=4), tmp_path / "auto", progress=False)
    assert json.loads(RunDir(tmp_path / "auto").info.read_text())["devices"] == 8
    with pytest.raises(DataError, match=r"devices=3 does not divide the batch size\(s\) \[16\]"):
        TOY.train(ToyConfig(devices=3), tmp_path / "bad", progress=False)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    from protgen_jax.checkpoint import Checkpointer

    with pytest.raises(TrainingError, match=r"non-finite at step 7; nothing after step 4"):
        TOY.train(ToyConfig(devices=1, poison_after=6), tmp_path / "nan", progress=False)
    with Checkpointer(tmp_path / "nan" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 4
    records = read_metrics(RunDir(tmp_path / "nan").metrics)
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]  # none past the NaN
    good = np.asarray(TOY.load_run(tmp_path / "nan").params["w"])
    assert np.all(np.isfinite(good))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax: failed read
def test_resume_past_a_damaged_newest_checkpoint_retrains_and_rewrites_it(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    TOY.train(ToyConfig(devices=1, steps=8), run.path, progress=False)
    chunks = [p for p in (run.checkpoints / "8").rglob("*") if p.is_file() and p.parent.name == "d"]
    for chunk in chunks:
        chunk.write_bytes(b"")
    capsys.readouterr()
    summary = TOY.train(ToyConfig(devices=1), run.path, progress=False)
    err = capsys.readouterr().err
    assert f"skipping unreadable checkpoint {run.checkpoints.resolve() / '8'} (" in err
    assert "using step 4" in err and "aside to 8.corrupt" in err
    assert summary["steps"] == 12
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["12", "8", "8.corrupt"]
    steps = [r["step"] for r in read_metrics(run.metrics) if r["split"] == "train"]
    assert steps == [2, 4, 6, 8, 10, 12]  # the records after step 4 were dropped and redone
    TOY.train(ToyConfig(devices=1, steps=12), tmp_path / "straight", progress=False)
    np.testing.assert_allclose(
        TOY.load_run(run.path).params["w"], TOY.load_run(tmp_path / "straight").params["w"]
    )


def test_one_writer_per_run_folder_and_a_released_lock_is_no_obstacle(tmp_path):
    import fcntl
    import os

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    fd = os.open(run.lock_file, os.O_RDWR | os.O_CREAT)  # another process's `protgen train`
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        with pytest.raises(
            DataError,
            match=rf"^{run.path} is being written by another protgen process \(pid 4242\); "
            "wait for it or use another --out$",
        ):
            TOY.train(ToyConfig(devices=1, steps=4), run.path, progress=False)
        assert sorted(p.name for p in run.path.iterdir()) == [".lock"]  # nothing was written
    finally:
        os.close(fd)  # as when that process ends, however it ends (kill -9 included)
    assert run.lock_file.read_text() == "4242\n"  # the stale file stays: it is no obstacle
    assert TOY.train(ToyConfig(devices=1, steps=4), run.path, progress=False)["steps"] == 4
    assert run.lock_file.read_text() == f"{os.getpid()}\n"
    with run.lock():  # readers take no lock: loading works while a writer holds it
        assert TOY.load_run(run.path).params["w"].shape == (4,)
        with pytest.raises(DataError, match="being written by another protgen process"):
            TOY.train(ToyConfig(devices=1, steps=8), run.path, progress=False)
    assert TOY.train(ToyConfig(devices=1, steps=8), run.path, progress=False)["steps"] == 8


@pytest.mark.parametrize(
    ("log_grad_norm", "what"), [(True, "gradient norm"), (False, "parameters")]
)
def test_a_nan_gradient_with_a_finite_loss_never_reaches_a_checkpoint(
    tmp_path, log_grad_norm, what
):
    """Update 8 (the last before the step-8 checkpoint) has a finite loss but NaN gradients: its
    NaN params must not be saved, whether the gradient norm is logged (it names the update) or not
    (the params are checked after every call)."""
    from protgen_jax.checkpoint import Checkpointer

    config = ToyConfig(devices=1, nan_grad_at=7, log_grad_norm=log_grad_norm)
    with pytest.raises(
        TrainingError, match=rf"training {what} became non-finite at step 8; nothing after step 4"
    ):
        TOY.train(config, tmp_path / "nan", progress=False)
    records = read_metrics(RunDir(tmp_path / "nan").metrics)
    assert ("grad_norm" in records[0]) == log_grad_norm
    with Checkpointer(tmp_path / "nan" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 4
    assert np.all(np.isfinite(np.asarray(TOY.load_run(tmp_path / "nan").params["w"])))


def test_bfloat16_compute_keeps_float32_params_and_learns(tmp_path):
    TOY.train(ToyConfig(devices=1, dtype="bfloat16"), tmp_path / "bf16", progress=False)
    params = TOY.load_run(tmp_path / "bf16").params
    assert params["w"].dtype == jnp.float32
    losses = _losses(tmp_path / "bf16")
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=0), "steps must be >= 1, got 0"),
        (dict(log_every=0), "log_every must be >= 1"),
        (dict(checkpoint_every=0), "checkpoint_every must be >= 1"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(dtype="float16"), "dtype must be one of float32, bfloat16"),
        (dict(ema_decay=1.0), r"ema_decay must lie in \[0, 1\)"),
    ],
)
def test_bad_shared_keys_are_refused_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(DataError, match=message):
        TOY.train(replace(ToyConfig(), **change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_padded_map_pads_the_last_batch_and_compiles_once():
    calls = []

    @jax.jit
    def double(x):
        return x * 2

    def fn(x):
        calls.append(x.shape)
        return double(x)

    out = padded_map(fn, (np.arange(10),), 4)
    np.testing.assert_array_equal(out, np.arange(10) * 2)
    assert calls == [(4,), (4,), (4,)]


def test_help_lists_each_familys_options_and_shared_flags_agree_on_type(capsys):
    from protgen_jax.cli import main
    from protgen_jax.recipes import all_recipes

    recipes = all_recipes()
    assert set(recipes) == {
        "vae", "backbone", "seqdiff", "design", "foldingdiff", "cvae", "latent", "classifier"
    }  # fmt: skip
    for command in ("sample", "evaluate", "score", "design"):
        seen = {}
        for recipe in recipes.values():
            for option in recipe.commands.get(command, ()):
                assert seen.setdefault(option.name, option.type) is option.type, option.name
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for family, recipe in recipes.items():
            if command in recipe.commands:
                assert f"{family} runs:" in text
                for option in recipe.commands[command]:
                    assert option.flag in text


def test_init_copies_the_weights_of_another_run_and_starts_a_fresh_optimizer(tmp_path, capsys):
    TOY.train(ToyConfig(devices=1), tmp_path / "a", progress=False)
    source = np.asarray(TOY.load_run(tmp_path / "a").params["w"])
    frozen = ToyConfig(devices=1, steps=4, learning_rate=0.0, init=str(tmp_path / "a"))
    summary = TOY.train(frozen, tmp_path / "b", progress=False)
    assert summary["steps"] == 4  # the step count starts at 0, not at the source's 12
    np.testing.assert_array_equal(np.asarray(TOY.load_run(tmp_path / "b").params["w"]), source)
    assert "init: 1 of 1 parameter arrays from" in capsys.readouterr().err
    learning = ToyConfig(devices=1, steps=4, init=str(tmp_path / "a"))
    TOY.train(learning, tmp_path / "c", progress=False)
    scratch = ToyConfig(devices=1, steps=4)
    TOY.train(scratch, tmp_path / "d", progress=False)
    # four updates from the trained weights end closer to the truth than four from zeros
    assert _losses(tmp_path / "c")[-1] < _losses(tmp_path / "d")[-1]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "run.json").write_text('{"recipe": "vae"}')
    with pytest.raises(DataError, match="is a 'vae' run"):
        TOY.train(ToyConfig(devices=1, init=str(tmp_path / "e")), tmp_path / "f", progress=False)
