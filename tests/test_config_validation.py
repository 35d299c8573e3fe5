"""Config files and ``--set`` overrides: every bad key or value is a one-line DataError naming the file
(or ``--set``) and the key, before any model is built."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from protgen_jax.cli import main
from protgen_jax.config import apply_overrides, config_to_dict, load_config, missing_keys
from protgen_jax.errors import DataError
from protgen_jax.recipes.backbone import BackboneConfig
from protgen_jax.recipes.seqdiff import SeqDiffConfig
from protgen_jax.recipes.vae import VAEConfig

CONFIGS = [VAEConfig, SeqDiffConfig, BackboneConfig]

# (file text, pattern the message must hold after "<file>: "), for every family.
BAD_FILES = [
    ("not json{", r"not valid JSON \(line 1 column 1"),
    ('{"steps": 5,}', r"not valid JSON \(line 1 column 13"),
    ("", r"not valid JSON \(line 1 column 1"),
    ("[1, 2]", "expected a JSON object of config keys, got a list"),
    ("5", "expected a JSON object of config keys, got the number 5"),
    ('"steps"', "expected a JSON object of config keys, got a string"),
    ("null", "expected a JSON object of config keys, got null"),
    ('{"steps": "abc"}', 'steps: expected an integer, got "abc"'),
    ('{"steps": 1.5}', "steps: expected an integer, got 1.5"),
    ('{"steps": true}', "steps: expected an integer, got true"),
    ('{"seed": null}', "seed: expected an integer, got null"),
    ('{"steps": [10]}', r"steps: expected an integer, got \[10\]"),
    ('{"ema_decay": "x"}', 'ema_decay: expected a number, got "x"'),
    ('{"ema_decay": NaN}', "ema_decay: expected a finite number, got NaN"),
    ('{"learning_rate": Infinity}', "learning_rate: expected a finite number"),
    ('{"dtype": 32}', "dtype: expected a string, got 32"),
    ('{"data": ["a.fasta"]}', r'data: expected a string, got \["a.fasta"\]'),
    ('{"stepz": 5}', r"unknown config key 'stepz' \(did you mean 'steps'\?\)"),
    (
        '{"learnin_rate": 1, "zzz": 2}',
        r"unknown config keys 'learnin_rate' \(did you mean 'learning_rate'\?\), 'zzz' for",
    ),
    ('{"steps": 1, "steps": 2}', "key 'steps' appears more than once"),
    ("[" * 100_000, r"not a config JSON \(nested too deeply\)"),
]

# Family-specific keys: tuples, booleans given as strings, floats.
BAD_FAMILY_VALUES = [
    (VAEConfig, '{"encoder_widths": 5}', "encoder_widths: expected a list of integers, got 5"),
    (VAEConfig, '{"decoder_widths": [100, "x"]}', r"decoder_widths\[1\]: expected an integer"),
    (VAEConfig, '{"bayesian": "false"}', 'bayesian: expected true or false, got "false"'),
    (VAEConfig, '{"bayesian": 0}', "bayesian: expected true or false, got 0"),
    (VAEConfig, '{"theta": "0.2"}', 'theta: expected a number, got "0.2"'),
    (SeqDiffConfig, '{"buckets": 5}', "buckets: expected a list of integers, got 5"),
    (SeqDiffConfig, '{"buckets": "32,64"}', 'buckets: expected a list of integers, got "32,64"'),
    (SeqDiffConfig, '{"buckets": [32, 64.5]}', r"buckets\[1\]: expected an integer, got 64.5"),
    (SeqDiffConfig, '{"dropout": "x"}', 'dropout: expected a number, got "x"'),
    (SeqDiffConfig, '{"clamp": "false"}', 'clamp: expected true or false, got "false"'),
    (SeqDiffConfig, '{"eval_guidance": [1, "a"]}', r"eval_guidance\[1\]: expected a number"),
    (SeqDiffConfig, '{"eval_guidance": 2}', "eval_guidance: expected a list of numbers, got 2"),
    (BackboneConfig, '{"buckets": 5}', "buckets: expected a list of integers, got 5"),
    (BackboneConfig, '{"rotate": "yes"}', 'rotate: expected true or false, got "yes"'),
    (BackboneConfig, '{"schedule": null}', "schedule: expected a string, got null"),
    (BackboneConfig, '{"sample_clip": [1]}', r"sample_clip: expected a number, got \[1\]"),
]


def _write(tmp_path: Path, text: str | bytes, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("text, message", BAD_FILES, ids=[t[:24] for t, _ in BAD_FILES])
def test_bad_config_file_names_file_and_key(cls, text, message, tmp_path):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message) as err:
        load_config(cls, path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "cls, text, message",
    BAD_FAMILY_VALUES,
    ids=[f"{c.__name__}-{t}" for c, t, _ in BAD_FAMILY_VALUES],
)
def test_bad_family_value_names_file_and_key(cls, text, message, tmp_path):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        load_config(cls, path)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "content",
    [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03binary", bytes(range(128, 256)), b"{\x00}"],
    ids=["gzip", "high-bytes", "nul"],
)
def test_binary_config_file(cls, content, tmp_path):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": not a config JSON"):
        load_config(cls, path)
    with pytest.raises(DataError, match="not a config JSON"):
        missing_keys(cls, path)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_missing_or_unreadable_file(cls, tmp_path):
    with pytest.raises(DataError, match="absent.json: cannot read config"):
        load_config(cls, tmp_path / "absent.json")
    with pytest.raises(DataError, match="cannot read config"):
        load_config(cls, tmp_path)  # a folder
    with pytest.raises(DataError, match="expected a JSON object"):
        missing_keys(cls, _write(tmp_path, "[1]"))


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_round_trip_and_numeric_widening(cls, tmp_path):
    """A saved config loads back equal; integers are accepted for floats, integral floats for
    integers, and JSON lists become tuples."""
    config = cls()
    path = _write(tmp_path, json.dumps(config_to_dict(config)))
    assert load_config(cls, path) == config
    loaded = load_config(cls, _write(tmp_path, '{"learning_rate": 1, "steps": 20.0}', "w.json"))
    assert loaded.learning_rate == 1.0 and isinstance(loaded.learning_rate, float)
    assert loaded.steps == 20 and isinstance(loaded.steps, int)
    tuples = [f.name for f in dataclasses.fields(cls) if isinstance(getattr(config, f.name), tuple)]
    for name in tuples:
        assert isinstance(getattr(load_config(cls, path), name), tuple)


def test_tuple_of_floats_accepts_integers(tmp_path):
    path = _write(tmp_path, '{"eval_guidance": [1, 2.5], "buckets": [32, 64]}')
    loaded = load_config(SeqDiffConfig, path)
    assert loaded.eval_guidance == (1.0, 2.5) and loaded.buckets == (32, 64)
    assert all(isinstance(v, float) for v in loaded.eval_guidance)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_run_config_with_an_obsolete_key_loads_with_a_warning(cls, tmp_path, capsys):
    """A run's own config.json (next to run.json) written by a version with a since-removed key
    still loads; the key is named on stderr. Anywhere else the same file is an error."""
    run = tmp_path / "run"
    run.mkdir()
    saved = {**config_to_dict(cls()), "old_stepz": 3}
    path = _write(run, json.dumps(saved), "config.json")
    with pytest.raises(DataError, match="unknown config key 'old_stepz'"):
        load_config(cls, path)
    (run / "run.json").write_text("{}")
    assert load_config(cls, path) == cls()
    err = capsys.readouterr().err
    assert "warning:" in err and "config.json" in err and "'old_stepz'" in err
    # a wrong type is an error even there
    _write(run, json.dumps({**saved, "steps": "abc"}), "config.json")
    with pytest.raises(DataError, match="config.json: steps: expected an integer"):
        load_config(cls, path)


# ------------------------------------------------------------------ --set
BAD_SETS = [
    (VAEConfig, "steps=abc", r"--set steps=abc: expected an integer"),
    (VAEConfig, "steps=1.5", r"--set steps=1.5: expected an integer"),
    (VAEConfig, "beta=x", r"--set beta=x: expected a finite number"),
    (VAEConfig, "beta=nan", r"--set beta=nan: expected a finite number"),
    (VAEConfig, "bayesian=maybe", r"--set bayesian=maybe: expected true or false"),
    (VAEConfig, "encoder_widths=a,b", r"--set encoder_widths=a,b: expected a list of integers"),
    (VAEConfig, "stepz=3", r"--set: unknown config key 'stepz' \(did you mean 'steps'\?\)"),
    (VAEConfig, "steps", r"--set expects key=value, got 'steps'"),
    (SeqDiffConfig, "dropout=x", r"--set dropout=x: expected a finite number"),
    (SeqDiffConfig, "buckets=32,x", r"--set buckets=32,x: expected a list of integers"),
    (SeqDiffConfig, "clamp=2", r"--set clamp=2: expected true or false"),
    (SeqDiffConfig, "eval_guidance=1,inf", r"--set eval_guidance=1,inf: expected a list of"),
    (SeqDiffConfig, "cfgdrop=0.1", r"unknown config key 'cfgdrop' \(did you mean 'cfg_drop'\?\)"),
    (BackboneConfig, "rotate=nope", r"--set rotate=nope: expected true or false"),
    (BackboneConfig, "buckets=64;128", r"--set buckets=64;128: expected a list of integers"),
    (BackboneConfig, "timesteps=1e3", r"--set timesteps=1e3: expected an integer"),
]


@pytest.mark.parametrize(
    "cls, item, message", BAD_SETS, ids=[f"{c.__name__}-{i}" for c, i, _ in BAD_SETS]
)
def test_bad_set_override(cls, item, message):
    with pytest.raises(DataError, match=message):
        apply_overrides(cls(), [item])


def test_set_overrides_parse_by_field_type():
    config = apply_overrides(
        SeqDiffConfig(),
        ["buckets=16,32", "learning_rate=1", "clamp=off", "eval_guidance=(1, 3)", "data=5"],
    )
    assert config.buckets == (16, 32) and config.learning_rate == 1.0
    assert config.clamp is False and config.eval_guidance == (1.0, 3.0) and config.data == "5"
    typed = apply_overrides(VAEConfig(), {"steps": 7, "encoder_widths": [8, 8], "beta": "0.5"})
    assert typed.steps == 7 and typed.encoder_widths == (8, 8) and typed.beta == 0.5
    with pytest.raises(DataError, match="--set: steps: expected an integer"):
        apply_overrides(VAEConfig(), {"steps": 1.5})


def test_cli_bad_config_exits_2_before_any_work(tmp_path, capsys):
    bad = _write(tmp_path, '{"buckets": 5}')
    out = tmp_path / "run"
    assert main(["--quiet", "train", "oadm", "--config", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "buckets" in err[0]
    assert not out.exists()
    typo = _write(tmp_path, '{"num_layer": 2}', "typo.json")
    assert main(["--quiet", "train", "backbone", "--config", str(typo), "--out", str(out)]) == 2
    assert "did you mean 'num_layers'" in capsys.readouterr().err
    args = ["--quiet", "train", "vae", "--out", str(out), "--set", "latent_dim=two"]
    assert main(args) == 2
    assert "--set latent_dim=two: expected an integer" in capsys.readouterr().err
    assert not out.exists()
