"""The PNG writers: files are complete (written beside, then renamed) and step axes read '12k'."""

import matplotlib.pyplot as plt

from protgen_jax.plots import _step_axis, plot_curves, plot_runs


def test_step_axis_writes_thousands_as_k():
    fig, ax = plt.subplots()
    _step_axis(ax)
    fmt = ax.xaxis.get_major_formatter()
    assert [fmt(x, 0) for x in (500, 2500, 12000, 20000)] == ["500", "2.5k", "12k", "20k"]
    assert ax.get_xlabel() == "step"
    plt.close(fig)


def test_curves_and_runs_write_pngs(tmp_path):
    records = [
        {"step": s, "split": split, "loss": 1.0 / s, "spearman": 0.1 * s / 1000}
        for s in range(1000, 5001, 1000)
        for split in ("train", "eval")
    ]
    curves = plot_curves(records, ["loss", "spearman", "absent"], tmp_path / "curves.png")
    runs = plot_runs(
        {"a": records, "b": records}, ["spearman"], tmp_path / "runs.png", reference={"x": 0.3}
    )
    for path in (curves, runs):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "runs.png"]


def test_importing_and_plotting_leaves_matplotlibs_backend_alone(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import matplotlib; from protgen_jax import plots; "
        f"plots.plot_curves([{{'step': 1, 'loss': 1.0}}], ['loss'], r'{tmp_path / 'c.png'}'); "
        "print(matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg" and (tmp_path / "c.png").exists()
