"""Backbone ``evaluate`` writes its report in two steps: the geometry first, then the held-out bound."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from protgen_jax.recipes import backbone as bb
from protgen_jax.recipes.backbone import commands

TINY = dict(
    num_layers=1, num_heads=2, model_dim=16, mlp_ratio=2.0, pair_dim=8, num_rbf=8, output_heads=2,
    extra_data="", timesteps=10, buckets=(64,), max_length=64, batch_tokens=128, holdout_fraction=0.0,
    log_every=1, eval_every=1, checkpoint_every=1, sample_batch=4, eval_num=2,
    eval_min_length=20, eval_max_length=30, devices=1, steps=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chains")
    for name in ("1K9Q_A", "1SAK_A", "1W4E_A"):
        shutil.copy(shared_data / "structures" / "pdb" / f"{name}.pdb", folder)
    config = dataclasses.replace(bb.RECIPE.make_config("backbone"), data=str(folder), **TINY)
    run = tmp_path_factory.mktemp("run")
    bb.RECIPE.train(config, run, progress=False)
    return run, folder


def test_evaluate_writes_the_geometry_before_the_bound(tiny_run, tmp_path, monkeypatch):
    run, folder = tiny_run
    out = tmp_path / "eval.json"
    given = {"out": str(out), "num": 2, "data": str(folder), "quiet": True}
    report = bb.RECIPE.run_command("evaluate", [run], given)
    saved = json.loads(out.read_text())
    assert saved["complete"] is True and report["complete"] is True
    assert np.isfinite(saved["heldout_bound"]["bits_per_coordinate"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "heldout_bound", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bb.RECIPE.run_command("evaluate", [run], given)
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and "heldout_bound" not in saved
    assert saved["num_samples"] == 2 and "gap_closed" in saved and "model" in saved
    assert (tmp_path / "eval_geometry.png").exists()
