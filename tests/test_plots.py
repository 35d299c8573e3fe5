"""The PNG writers: files are complete (written beside, then renamed) and step axes read '12k'."""

import matplotlib.pyplot as plt

from protgen_jax.plots import _step_axis, curves_figure, metric_label, plot_curves, plot_runs


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


def test_curves_have_titles_units_training_step_and_a_train_eval_legend():
    records = [{"step": s, "split": "train", "neg_elbo": 300.0 - s / 100, "kl_z": 5.0, "odd": 1.0}
               for s in range(100, 1001, 100)]  # fmt: skip
    records += [{"step": s, "split": "eval", "val_neg_elbo": 310.0 - s / 100, "spearman": s / 2e3,
                 "val_mse_t10": 0.5} for s in (500, 1000)]  # fmt: skip
    keys = ["neg_elbo", "kl_z", "val_neg_elbo", "spearman", "val_mse_t10", "odd", "absent"]
    fig, axes = curves_figure(records, keys, title="vae")
    titles = [ax.get_title() for ax in axes]
    assert titles == [
        "negative ELBO",
        "KL of the latent posterior",
        "DMS Spearman (score vs fitness)",
        "held-out noise-prediction error, t=10",
        "odd",
    ]  # neg_elbo and val_neg_elbo share a panel; an unknown key shows its name
    assert [ax.get_ylabel() for ax in axes] == [
        "nats / sequence", "nats / sequence", "Spearman rho", "eps MSE at t=10", "odd"
    ]  # fmt: skip
    assert {ax.get_xlabel() for ax in axes} == {"training step"}
    first = axes[0].get_lines()
    assert [line.get_label() for line in first] == ["train", "eval"]
    assert first[0].get_color() != first[1].get_color()
    assert first[0].get_marker() != first[1].get_marker()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["train", "eval"]
    assert fig.get_suptitle() == "vae"
    assert metric_label("bound_per_token") == ("likelihood bound", "nats / token")
    assert metric_label("val_bound_per_token") == ("held-out likelihood bound", "nats / token")
    assert metric_label("grad_norm")[0] == "gradient norm (before clipping)"


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
