"""Nothing a user types crashes ``protgen`` or damages a run: internal errors are one line plus a log
file, outputs are checked before any model is loaded (never inside a run folder, never replacing a file
without ``--force``), ``train --out`` must be a run, an empty or a new folder, and a resume cannot change
what the run trains.

Most cases use run folders that hold the files of a run but no checkpoint: every refusal happens before
a model is loaded, and accepted commands reach a recorder that stands in for the family's command (or
training). One tiny real VAE run (needs ../shared/data) checks the whole path end to end.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

from protgen_jax import cli
from protgen_jax.cli import main
from protgen_jax.config import config_to_dict
from protgen_jax.recipes import recipe_for_model

# ----------------------------------------------------------------------------------- helpers


def make_run(folder: Path, model: str, **config_changes) -> Path:
    """A run folder of ``model`` with every file a trained run holds (checkpoint contents are fake)."""
    recipe = recipe_for_model(model)
    folder.mkdir(parents=True)
    config = {**config_to_dict(recipe.make_config(model)), **config_changes}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "run.json").write_text(json.dumps({"family": model, "recipe": recipe.family}))
    (folder / "summary.json").write_text('{"steps": 4}\n')
    (folder / "metrics.jsonl").write_text('{"step": 2, "split": "train", "loss": 1.0}\n')
    (folder / "curves.png").write_bytes(b"\x89PNG fake")
    (folder / recipe.data_file).write_bytes(b"data")
    (folder / "data.json").write_text("{}\n")
    (folder / "checkpoints" / "4").mkdir(parents=True)
    (folder / "checkpoints" / "4" / "state").write_bytes(b"params")
    return folder


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hex digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture
def recorder(monkeypatch):
    """Replace every family's command and training by a recorder: ``calls`` lists what reached it."""
    calls = []
    for model in ("vae", "backbone", "oadm"):
        recipe = recipe_for_model(model)

        def run_command(command, runs, given, _family=recipe.family):
            calls.append(("command", _family, command, given))
            return {"ok": True}

        def train(config, run_dir, progress=True, _family=recipe.family):
            calls.append(("train", _family, config, Path(run_dir)))
            return {"ok": True}

        monkeypatch.setattr(recipe, "run_command", run_command)
        monkeypatch.setattr(recipe, "train", train)
    return calls


@pytest.fixture
def runs(tmp_path):
    """One fake run per family, in ``tmp_path/runs``."""
    base = tmp_path / "runs"
    return {
        "vae": make_run(base / "vae", "vae"),
        "backbone": make_run(base / "backbone", "backbone"),
        "oadm": make_run(base / "oadm", "oadm"),
        "vae2": make_run(base / "vae2", "vae"),
    }


# ----------------------------------------------------------------------------------- no tracebacks


@pytest.mark.parametrize("log_dir_usable", [True, False])
def test_an_internal_error_is_one_line_and_the_trace_goes_to_a_log(
    log_dir_usable, tmp_path, monkeypatch, capsys
):
    import tempfile

    from protgen_jax.data import registry

    def broken():
        raise RuntimeError("boom\n  on two lines")

    monkeypatch.setattr(registry, "list_datasets", broken)
    log_dir = tmp_path / "logs"
    if not log_dir_usable:
        log_dir.write_text("a file, so no folder can be made here")
    monkeypatch.setenv("PROTGEN_LOG_DIR", str(log_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["data", "list"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("internal error: RuntimeError: boom on two lines (full trace in ")
    path = Path(err.rsplit("(full trace in ", 1)[1].rstrip(")"))
    assert path.parent == (log_dir if log_dir_usable else tmp_path)
    trace = path.read_text()
    assert "Traceback" in trace and "RuntimeError: boom" in trace and "in broken" in trace
    assert "protgen data list" in trace
    assert main(["data", "list"]) == 1  # a second error of the process: a second log
    again = capsys.readouterr().err.strip().rsplit("(full trace in ", 1)[1].rstrip(")")
    assert again != str(path) and Path(again).read_text() == trace


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "list"], "interrupted"),
        (["train", "vae", "--out", "RUN"], "interrupted: the last checkpoint is kept"),
    ],
)
def test_an_interrupt_is_one_line_and_exit_130(argv, message, monkeypatch, capsys, tmp_path):
    from protgen_jax.data import registry

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "list_datasets", interrupt)
    monkeypatch.setattr(cli, "_cmd_train", interrupt)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


@pytest.mark.parametrize("argv", [["sample"], ["train"], ["nonsense"], ["score", "x", "--bad"]])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("out", ["", "afile"])
def test_quickstart_refuses_an_empty_or_file_out(out, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine\n")
    assert main(["--quiet", "quickstart", "--out", str(tmp_path / out) if out else ""]) == 2
    one_line_error(capsys)
    assert (tmp_path / "afile").read_text() == "mine\n"


# ----------------------------------------------------------------------------------- run outputs

# (run, command, --out relative to tmp_path with {RUN} the run folder, expected message)
REFUSED = [
    ("vae", "sample", "", "--out is empty"),
    ("vae", "sample", "   ", "--out is empty"),
    ("vae", "sample", "outdir", "is a folder; sample writes a file"),
    ("oadm", "evaluate", "outdir", "is a folder; evaluate writes a file"),
    ("vae", "score", "outdir", "is a folder; score writes a file"),
    ("backbone", "sample", "afile.txt", "is a file; sample of a 'backbone' run fills a folder"),
    ("vae", "sample", "afile.txt/x.fasta", "afile.txt is a file, not a folder"),
    ("vae", "sample", "locked/x.fasta", "cannot write in the folder"),
    ("vae", "score", "locked/new/deeper/x.json", "where the missing ones would be made"),
    ("vae", "score", "score.png", "would replace it"),
    ("vae", "evaluate", "{RUN}", "is a folder"),
    ("backbone", "sample", "{RUN}", "inside the run folder"),
    ("backbone", "sample", "{RUN}/checkpoints", "inside the run folder"),
    ("backbone", "sample", "{RUN}/pdbs", "inside the run folder"),
    ("backbone", "evaluate", "{RUN}/data.json", "inside the run folder"),
    ("backbone", "evaluate", "{RUN}/eval.json", "inside the run folder"),
    ("vae", "sample", "{RUN}/config.json", "inside the run folder"),
    ("vae", "sample", "{RUN}/run.json", "inside the run folder"),
    ("vae", "evaluate", "{RUN}/summary.json", "inside the run folder"),
    ("vae", "evaluate", "{RUN}/metrics.jsonl", "inside the run folder"),
    ("vae", "score", "{RUN}/alignment.npz", "inside the run folder"),
    ("vae", "score", "{RUN}/curves.png", "inside the run folder"),
    ("vae", "score", "{RUN}/checkpoints/4/state", "inside the run folder"),
    ("vae", "score", "{RUN}/new_report.json", "inside the run folder"),
    ("vae", "score", "{RUN}/../vae/./x.json", "inside the run folder"),
    ("vae", "score", "link/x.json", "inside the run folder"),  # link -> the run folder
    ("vae", "sample", "cfglink.json", "inside the run folder"),  # -> the run's config.json
    ("oadm", "sample", "{RUN}/data.npz", "inside the run folder"),
    ("oadm", "evaluate", "{RUN}/run.json", "inside the run folder"),
]


@pytest.mark.parametrize("family, command, out, message", REFUSED)
def test_bad_outputs_are_refused_before_loading_and_the_run_is_untouched(
    family, command, out, message, runs, recorder, tmp_path, monkeypatch, capsys
):
    run = runs[family]
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile.txt").write_text("mine\n")
    (tmp_path / "locked").mkdir()
    (tmp_path / "link").symlink_to(run)
    (tmp_path / "cfglink.json").symlink_to(run / "config.json")
    locked = str(tmp_path / "locked")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: str(p) != locked and real_access(p, mode)
    )  # as a non-root user without write permission (root may write anywhere)
    before = {name: digest(folder) for name, folder in runs.items()}
    outside = sorted(p.name for p in tmp_path.iterdir())
    out_path = out.replace("{RUN}", str(run)) if out.strip() else out
    if out.strip() and "{RUN}" not in out:
        out_path = str(tmp_path / out)
    assert main(["--quiet", command, str(run), "--out", out_path, "--force"]) == 2
    assert message in one_line_error(capsys)
    assert recorder == []  # nothing was loaded
    assert {name: digest(folder) for name, folder in runs.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    assert (tmp_path / "afile.txt").read_text() == "mine\n"


def test_score_refuses_an_output_inside_any_of_its_runs(runs, recorder, capsys):
    before = digest(runs["vae2"])
    argv = ["score", str(runs["vae"]), str(runs["vae2"]), "--out", str(runs["vae2"] / "s.json")]
    assert main(argv) == 2
    assert f"inside the run folder {runs['vae2']}" in one_line_error(capsys)
    assert digest(runs["vae2"]) == before and recorder == []


# (run, command, files that exist before, --out relative to tmp_path)
EXISTING = [
    ("vae", "sample", ["samples.fasta"], "samples.fasta"),
    ("vae", "score", ["score.json"], "score.json"),
    ("vae", "score", ["score_scores.csv"], "score.json"),
    ("vae", "score", ["score.png"], "score.json"),
    ("vae", "evaluate", ["eval.json"], "eval.json"),
    ("vae", "evaluate", ["eval_latent.png"], "eval.json"),
    ("vae", "evaluate", ["eval_interpolation.fasta"], "eval.json"),
    ("oadm", "sample", ["s.fasta"], "s.fasta"),
    ("oadm", "evaluate", ["e.json"], "e.json"),
    ("backbone", "sample", ["pdbs/sample_0003.pdb"], "pdbs"),
    ("backbone", "sample", ["pdbs/summary.json"], "pdbs"),
    ("backbone", "evaluate", ["eval.json"], "eval.json"),
    ("backbone", "evaluate", ["eval_geometry.png"], "eval.json"),
    ("backbone", "evaluate", ["eval_samples/sample_0000.pdb"], "eval.json"),
]


@pytest.mark.parametrize("family, command, existing, out", EXISTING)
def test_an_existing_output_is_replaced_only_with_force(
    family, command, existing, out, runs, recorder, tmp_path, capsys
):
    for name in existing:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("precious\n")
    argv = ["--quiet", command, str(runs[family]), "--out", str(tmp_path / out)]
    assert main(argv) == 2
    err = one_line_error(capsys)
    assert "already exists; pass --force to replace it" in err and existing[0] in err
    assert recorder == [] and all((tmp_path / n).read_text() == "precious\n" for n in existing)
    assert main([*argv, "--force"]) == 0
    assert [(c[0], c[2], c[3]["force"]) for c in recorder] == [("command", command, True)]


@pytest.mark.parametrize(
    "family, command, out",
    [
        ("vae", "sample", "new/deeper/s.fasta"),  # missing folders are made, as before
        ("vae", "score", "score.json"),
        ("backbone", "sample", "pdbs"),  # a folder holding no sample_*.pdb
        ("backbone", "sample", "new_pdbs"),
        ("oadm", "evaluate", "eval.json"),
        ("backbone", "sample", "runs"),  # the folder holding the run folders is not inside one
    ],
)
def test_good_outputs_reach_the_command(family, command, out, runs, recorder, tmp_path):
    (tmp_path / "pdbs").mkdir()
    (tmp_path / "pdbs" / "notes.txt").write_text("mine\n")
    assert main(["--quiet", command, str(runs[family]), "--out", str(tmp_path / out)]) == 0
    assert len(recorder) == 1 and recorder[0][3]["force"] is False


def test_option_errors_come_before_output_errors(runs, recorder, tmp_path, capsys):
    existing = tmp_path / "s.fasta"
    existing.write_text("x\n")
    assert main(["sample", str(runs["vae"]), "--out", str(existing), "--num", "0"]) == 2
    assert "--num must be >= 1, got 0" in one_line_error(capsys)
    argv = ["score", str(runs["vae"]), "--out", str(existing), "--estimator", "mean"]
    assert main([*argv, "--samples", "3"]) == 2
    assert "draws no samples" in one_line_error(capsys)


# ----------------------------------------------------------------------------------- train --out


@pytest.mark.parametrize(
    "setup, out, message",
    [
        (None, "", "--out is empty"),
        ("file", "target", "is a file, not a run folder"),
        ("stranger", "target", "is not a run folder (it holds notes.txt; no run.json"),
        ("run", "run/checkpoints", "lies inside the run folder"),
        ("run", "run/checkpoints/new", "lies inside the run folder"),
        ("run", "run/sub/new", "lies inside the run folder"),
        ("locked", "locked/new_run", "cannot write in the folder"),
    ],
)
def test_train_out_must_be_a_run_an_empty_folder_or_new(
    setup, out, message, recorder, tmp_path, monkeypatch, capsys
):
    target = tmp_path / "target"
    if setup == "file":
        target.write_text("mine\n")
    elif setup == "stranger":
        target.mkdir()
        (target / "notes.txt").write_text("mine\n")
        (target / ".lock").write_text("")
    elif setup == "run":
        make_run(tmp_path / "run", "vae")
    elif setup == "locked":
        (tmp_path / "locked").mkdir()
        real_access = os.access
        locked = str(tmp_path / "locked")
        monkeypatch.setattr(os, "access", lambda p, m: str(p) != locked and real_access(p, m))
    before = digest(tmp_path)
    assert main(["--quiet", "train", "vae", "--out", str(tmp_path / out) if out else ""]) == 2
    assert message in one_line_error(capsys)
    assert digest(tmp_path) == before and recorder == []


@pytest.mark.parametrize("contents", [[], [".lock"], ["alignment.npz", ".lock"]])
def test_train_accepts_a_new_or_empty_folder(contents, recorder, tmp_path):
    """A folder holding nothing, a lock, or the data file of a first call that failed before its
    config.json was written (train writes the prepared data first) is trained into."""
    (tmp_path / "r").mkdir()
    for name in contents:
        (tmp_path / "r" / name).write_text("")
    for out in (tmp_path / "r", tmp_path / "new" / "deeper"):
        assert main(["--quiet", "train", "vae", "--out", str(out)]) == 0
        assert recorder[-1][0] == "train" and recorder[-1][3] == out


# ----------------------------------------------------------------------------------- resume


SAVED = {"latent_dim": 4, "steps": 8, "seed": 3, "data": "/data/aln.a2m", "log_every": 2}


@pytest.mark.parametrize(
    "extra, key, old, new",
    [
        (["--set", "latent_dim=5"], "latent_dim", 4, 5),
        (["--set", "model=lecture"], "model", "'deepsequence'", "'lecture'"),
        (["--set", "seed=0"], "seed", 3, 0),
        (["--set", "encoder_widths=64,64"], "encoder_widths", "(1500, 1500)", "(64, 64)"),
        (["--set", "data=/data/other.a2m"], "data", "'/data/aln.a2m'", "'/data/other.a2m'"),
        (["--steps", "20", "--set", "batch_size=7"], "batch_size", 100, 7),
        (["--config", "{CONFIG}"], "learning_rate", 0.001, 0.01),
    ],
)
def test_a_resume_cannot_change_what_the_run_trains(
    extra, key, old, new, recorder, tmp_path, capsys
):
    run = make_run(tmp_path / "run", "vae", **SAVED)
    config = tmp_path / "other.json"
    config.write_text(json.dumps({"latent_dim": 4, "learning_rate": 0.01, "steps": 50}))
    before = digest(run)
    extra = [a.replace("{CONFIG}", str(config)) for a in extra]
    assert main(["--quiet", "train", "vae", "--out", str(run), *extra]) == 2
    err = one_line_error(capsys)
    assert "a resumed run keeps its config" in err and "train a new --out to change it" in err
    assert f"{key} is {old} there, not {new}" in err
    assert digest(run) == before and recorder == []


def test_a_resume_changes_only_how_long_and_how_it_trains(recorder, tmp_path, capsys):
    run = make_run(tmp_path / "run", "vae", **SAVED)
    config = tmp_path / "same.json"
    config.write_text(json.dumps({"latent_dim": 4, "seed": 3, "eval_every": 9, "steps": 30}))
    changes = ["time_limit_minutes=1.5", "log_every=7", "checkpoint_every=5"]
    changes += ["steps_per_call=2", "devices=1"]
    argv = ["--quiet", "train", "vae", "--out", str(run), "--config", str(config)]
    argv += [
        "--data",
        "/data/aln.a2m",
        "--steps",
        "40",
        *[a for c in changes for a in ("--set", c)],
    ]
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().err
    (_, _, trained, path), *_ = recorder
    assert path == run and trained.steps == 40 and trained.eval_every == 9
    assert (trained.time_limit_minutes, trained.log_every, trained.checkpoint_every) == (1.5, 7, 5)
    assert (trained.steps_per_call, trained.devices) == (2, 1)
    assert (trained.latent_dim, trained.seed, trained.data) == (4, 3, "/data/aln.a2m")


def test_a_key_older_runs_lack_may_be_set_on_resume(recorder, tmp_path, capsys):
    """An old config.json without a key loads with today's default; the warning says to --set the
    run's original value, so that is allowed."""
    run = make_run(tmp_path / "run", "vae", **SAVED)
    saved = json.loads((run / "config.json").read_text())
    del saved["local_reparameterization"]
    (run / "config.json").write_text(json.dumps(saved))
    argv = ["--quiet", "train", "vae", "--out", str(run)]
    assert main([*argv, "--set", "local_reparameterization=false"]) == 0
    assert recorder[0][2].local_reparameterization is False
    assert "predates these keys" in capsys.readouterr().err
    assert main([*argv, "--set", "sparsity_prior_p=0.5"]) == 2
    assert "sparsity_prior_p is 0.001 there, not 0.5" in one_line_error(capsys)


# ----------------------------------------------------------------------------------- end to end

TINY = [
    "encoder_widths=32",
    "decoder_widths=8,16",
    "latent_dim=2",
    "dictionary_size=4",
    "batch_size=16",
    "log_every=1",
    "eval_every=0",
    "checkpoint_every=2",
    "steps_per_call=2",
    "devices=1",
]


@pytest.fixture(scope="module")
def slice_a2m(shared_data, tmp_path_factory):
    """The first 60 records of the real BLAT_ECOLX alignment (focus first)."""
    lines = (shared_data / "blat_ecolx" / "BLAT_ECOLX.a2m").read_text().splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.startswith(">")]
    path = tmp_path_factory.mktemp("aln") / "slice.a2m"
    path.write_text("".join(lines[: headers[60]]))
    return path


def test_a_failed_validation_leaves_the_folder_untouched_and_the_next_train_works(
    slice_a2m, tmp_path, capsys
):
    run = tmp_path / "new"
    sets = [a for s in TINY for a in ("--set", s)]
    argv = ["--quiet", "train", "vae", "--data", str(slice_a2m), "--out", str(run), *sets]
    for bad in (["--set", "model=foo"], ["--set", "latent_dim=0"], ["--steps", "0"]):
        assert main([*argv, *bad]) == 2
        one_line_error(capsys)
        assert not (run / "config.json").exists() and not run.exists()
    assert main([*argv, "--steps", "2"]) == 0
    assert json.loads((run / "config.json").read_text())["model"] == "deepsequence"
    trained = digest(run)
    # the trained run: a changed architecture is refused, outputs go outside it and are kept
    assert main([*argv, "--steps", "2", "--set", "latent_dim=3"]) == 2
    assert "latent_dim is 2 there, not 3" in one_line_error(capsys)
    fasta = tmp_path / "s.fasta"
    sample = ["--quiet", "sample", str(run), "--num", "3", "--out"]
    assert main([*sample, str(run / "s.fasta")]) == 2
    assert main([*sample, str(fasta)]) == 0
    first = fasta.read_text()
    assert main([*sample, str(fasta), "--seed", "9"]) == 2
    assert fasta.read_text() == first
    assert main([*sample, str(fasta), "--seed", "9", "--force"]) == 0
    assert fasta.read_text() != first
    assert digest(run) == trained
