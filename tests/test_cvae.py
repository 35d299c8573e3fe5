"""Tests for the fixed-width (conditional) VAE: encoding, properties, loss, split, recipe and CLI."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protgen_jax import alphabet
from protgen_jax.cli import main
from protgen_jax.config import apply_overrides
from protgen_jax.data.fasta import read_fasta, read_records, write_fasta
from protgen_jax.data.fixed_width import (
    END,
    coverage,
    cut_at_end,
    encode_fixed,
    encode_many,
    reconstruction_mask,
    tokens_to_strings,
)
from protgen_jax.errors import DataError
from protgen_jax.nn import ConditionalProteinVAE
from protgen_jax.properties import builtin_properties, parse_builtin, read_property_csv
from protgen_jax.recipes import recipe_for_model, recipe_for_run
from protgen_jax.recipes.cvae import (
    RECIPE,
    CVAEConfig,
    CVAEModel,
    decode_logits,
    draw_rows,
    encode,
    heldout_arrays,
    load_vae,
    make_loss_fn,
    sample_tokens,
    training_arrays,
)
from protgen_jax.recipes.cvae.recipe import padded_tokens, prepare
from protgen_jax.recipes.seqdiff import RECIPE as SEQDIFF

TINY = [
    "width=48", "latent_dim=4", "encoder_widths=32", "decoder_widths=32", "batch_size=8",
    "steps_per_call=2", "log_every=2", "eval_every=2", "checkpoint_every=2", "eval_sequences=8",
    "sample_batch=16", "property_families=2", "property_grid=2", "property_samples=2",
    "cond_families=2", "cond_samples=2", "kl_warmup_steps=2", "devices=1",
]  # fmt: skip


def tok(text: str) -> np.ndarray:
    return np.array([alphabet.AMINO_ACIDS.index(c) for c in text], np.int32)


@pytest.fixture(scope="module")
def slice_fasta(shared_data, tmp_path_factory) -> Path:
    """3 real families x 40 domain sequences from the shared file."""
    records = read_records(shared_data / "sequences" / "family_domains_train.fasta")
    picked, counts = [], {}
    for r in records:
        family = r.id.split("|")[0]
        if family in ("PF00013", "PF00072", "PF00041") and counts.get(family, 0) < 40:
            counts[family] = counts.get(family, 0) + 1
            picked.append((r.id, r.sequence))
    path = tmp_path_factory.mktemp("data") / "slice.fasta"
    write_fasta(path, picked)
    return path


@pytest.fixture(scope="module")
def cvae_run(slice_fasta, tmp_path_factory) -> Path:
    """A 4-step conditional VAE with built-in properties, trained through the command line."""
    run_dir = tmp_path_factory.mktemp("runs") / "cvae"
    args = ["--quiet", "train", "cvae", "--data", str(slice_fasta), "--out", str(run_dir)]
    extra = [*TINY, "properties=builtin:net_charge,hydrophobic_fraction"]
    assert main(args + ["--steps", "4"] + [x for s in extra for x in ("--set", s)]) == 0
    return run_dir


def run_data(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "config.json").read_text())["data"])


# ------------------------------------------------------------------------------ encoding


def test_fixed_width_rule_mask_and_cut():
    short, exact, long = tok("ACD"), tok("ACDEF"), tok("ACDEFGHIK")
    assert encode_fixed(short, 5).tolist() == [0, 1, 2, END, END]
    assert encode_fixed(exact, 5).tolist() == exact.tolist()
    assert encode_fixed(long, 5).tolist() == tok("ACDEF").tolist()  # evaluation: first W
    assert encode_fixed(long, 5, start=3).tolist() == tok("EFGHI").tolist()
    assert encode_fixed(long, 5, start=99).tolist() == tok("FGHIK").tolist()  # start clipped
    rows = encode_many([short, exact, long, tok("")], 5)
    mask = reconstruction_mask(rows)
    assert mask.tolist() == [
        [True, True, True, True, False],  # residues + the first END
        [True] * 5,
        [True] * 5,
        [True, False, False, False, False],
    ]
    assert np.array_equal(np.asarray(reconstruction_mask(jnp.asarray(rows))), mask)
    assert [len(s) for s in cut_at_end(rows)] == [3, 5, 5, 0]
    sampled = np.array([[0, END, 1, 2, END], [END, 3, 3, 3, 3]])
    assert tokens_to_strings(sampled) == ["A", ""]
    cov = coverage(np.array([3, 5, 9, 10]), 5)
    assert cov["fraction_sequences_whole"] == 0.5
    assert cov["fraction_residues_kept"] == pytest.approx((3 + 5 + 5 + 5) / 27)
    assert cov["num_cropped"] == 2


def test_builtin_properties_by_hand():
    rows = encode_many([tok("KRDEH"), tok("KKAIL"), tok("WWGG")], 6)
    values = builtin_properties(rows, ("net_charge", "hydrophobic_fraction"))
    assert values[:, 0].tolist() == [0.0, 2.0, 0.0]  # H neutral; END counts for nothing
    assert values[:, 1] == pytest.approx([0.0, 3 / 5, 2 / 4])
    on_device = builtin_properties(jnp.asarray(rows), ("hydrophobic_fraction",))
    assert np.asarray(on_device)[:, 0] == pytest.approx([0.0, 3 / 5, 2 / 4])
    assert builtin_properties(np.full((1, 4), END), ("hydrophobic_fraction",)).tolist() == [[0.0]]
    with pytest.raises(DataError, match="unknown built-in 'charge'"):
        parse_builtin("builtin:charge")


def test_property_csv_errors_name_file_row_and_problem(tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("id,charge,size\nF|a,1.5,3\nF|b,-2,4\n")
    names, values = read_property_csv(good, ("F|b", "F|a"))
    assert names == ("charge", "size") and values.tolist() == [[-2.0, 4.0], [1.5, 3.0]]
    with pytest.raises(DataError, match=r"p\.csv: no row for record id 'F\|c'"):
        read_property_csv(good, ("F|a", "F|c"))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,charge\nF|a,1\nF|b,high\n")
    with pytest.raises(
        DataError, match=r"bad\.csv: row 3 \(id 'F\|b'\) column 'charge': non-numeric"
    ):
        read_property_csv(bad, ("F|a", "F|b"))
    noid = tmp_path / "noid.csv"
    noid.write_text("name,charge\nF|a,1\n")
    with pytest.raises(DataError, match=r"noid\.csv: row 1 \(header\) needs an 'id' column"):
        read_property_csv(noid, ("F|a",))


def test_property_csv_run_errors_before_training(slice_fasta, tmp_path):
    csv = tmp_path / "props.csv"
    first = read_records(slice_fasta)[0].id
    csv.write_text(f"id,charge\n{first},1\n")
    config = apply_overrides(CVAEConfig(), [f"data={slice_fasta}", f"properties={csv}", *TINY])
    with pytest.raises(DataError, match="props.csv: no row for record id"):
        RECIPE.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "data.npz").exists()


# ------------------------------------------------------------------------------ loss and batches


def test_loss_is_the_masked_negative_elbo_by_hand():
    module = ConditionalProteinVAE(
        seq_len=6, condition_dim=3 + 1, vocab_size=21, encoder_widths=(8,), decoder_widths=(8,),
        latent_dim=2,
    )  # fmt: skip
    model = CVAEModel(module, num_families=2, num_properties=1, width=6)
    params = model.init(jax.random.key(1))
    tokens = np.stack([encode_fixed(tok("ACDE"), 6), encode_fixed(tok("KLMNPQRS"), 6)])
    batch = {
        "tokens": jnp.asarray(tokens), "family": jnp.array([0, 2]),
        "props": jnp.array([[0.5], [-1.0]]), "beta": jnp.float32(0.25),
    }  # fmt: skip
    key = jax.random.key(7)
    loss, aux = make_loss_fn(model)(params, batch, key)
    # by hand: the same noise, z = mu + sigma eps, masked categorical NLL + closed-form KL
    mu, logvar = (np.asarray(a, np.float64) for a in model.encode(params, batch["tokens"]))
    eps = np.asarray(jax.random.normal(key, (2, 2)), np.float64)
    z = mu + np.exp(0.5 * logvar) * eps
    cond = np.array([[1, 0, 0, 0.5], [0, 0, 1, -1.0]], np.float32)
    logits = np.asarray(module.apply(params, jnp.asarray(z, jnp.float32), jnp.asarray(cond),
                                     method=module.decode), np.float64)  # fmt: skip
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    mask = np.array([[1, 1, 1, 1, 1, 0], [1] * 6], bool)  # "ACDE" + END counted, then masked
    nll = -(picked * mask).sum(-1)
    kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(-1)
    assert float(loss) == pytest.approx(np.mean(nll + 0.25 * kl), rel=1e-4)
    assert float(aux["neg_elbo"]) == pytest.approx(np.mean(nll + kl), rel=1e-4)
    assert float(aux["neg_elbo_per_residue"]) == pytest.approx((nll + kl).sum() / (4 + 6), rel=1e-4)


def test_device_draw_crops_ends_drops_labels_and_computes_properties():
    seqs = [tok("ACDEFGHIKLMN"), tok("KK"), tok("DDDWW")]

    class Fake:
        lengths = np.array([len(s) for s in seqs])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        tokens = np.concatenate(seqs).astype(np.int8)

        def __len__(self):
            return 3

    full, lengths = padded_tokens(Fake(), 6)
    arrays = {
        "tokens": jnp.asarray(full), "lengths": jnp.asarray(lengths),
        "labels": jnp.array([0, -1, 1]), "props": jnp.zeros((3, 0)),
        "mean": jnp.array([0.0, 0.5]), "std": jnp.array([2.0, 0.25]),
    }  # fmt: skip
    batch = draw_rows(
        arrays, jax.random.key(3), jnp.int32(4), batch_size=64, width=6, label_dropout=0.5,
        null_family=2, builtin=("net_charge", "hydrophobic_fraction"), beta=1.0, warmup=10,
    )  # fmt: skip
    tokens = np.asarray(batch["tokens"])
    strings = tokens_to_strings(tokens)
    starts = set()
    for row, s in zip(tokens, strings, strict=True):
        if len(s) == 6:  # a window of the 12-residue sequence
            starts.add("ACDEFGHIKLMN".index(s))
        else:
            assert s in ("KK", "DDDWW") and (row[len(s) :] == END).all()
    assert len(starts) > 2  # windows start at different places
    family = np.asarray(batch["family"])
    kk = np.array([s == "KK" for s in strings])
    assert (family[kk] == 2).all()  # no family -> null
    assert 0 < np.mean(family[~kk] == 2) < 1  # label dropout
    expected = (builtin_properties(tokens, ("net_charge", "hydrophobic_fraction")) -
                np.array([0.0, 0.5])) / np.array([2.0, 0.25])  # fmt: skip
    assert np.asarray(batch["props"]) == pytest.approx(expected, abs=1e-5)
    assert float(batch["beta"]) == pytest.approx(0.5)


# ------------------------------------------------------------------------------ split and recipe


def test_split_is_the_seqdiff_split(slice_fasta):
    ours = prepare(apply_overrides(CVAEConfig(), [f"data={slice_fasta}", "holdout_fraction=0.3"]))
    theirs = SEQDIFF.prepare(
        apply_overrides(SEQDIFF.make_config("oadm"), [f"data={slice_fasta}", "holdout_fraction=0.3"]),
        progress=False,
    )  # fmt: skip
    assert ours.sequences.ids == theirs.sequences.ids
    assert np.array_equal(ours.holdout, theirs.holdout) and 10 < ours.holdout.sum() < 70
    assert recipe_for_model("cvae") is RECIPE


def test_cli_train_sample_evaluate_and_api(cvae_run, tmp_path):
    assert recipe_for_run(cvae_run) is RECIPE
    summary = json.loads((cvae_run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["num_families"] == 3
    assert summary["fixed_width"]["width"] == 48
    lengths = np.array([len(s) for _, s in read_fasta(run_data(cvae_run))])
    assert summary["fixed_width"] == coverage(lengths, 48)
    assert summary["fixed_width"]["fraction_residues_kept"] < 1
    fasta = tmp_path / "s.fasta"
    args = ["--quiet", "sample", str(cvae_run), "--num", "5", "--family", "PF00072",
            "--property", "net_charge=3", "--out", str(fasta)]  # fmt: skip
    assert main(args) == 0
    records = read_records(fasta)
    assert len(records) == 5
    for record in records:
        seq, header = record.sequence, record.description
        assert record.id.startswith("PF00072|sample_") and "requested_net_charge=3" in header
        words = dict(w.split("=") for w in header.split())
        assert float(words["net_charge"]) == seq.count("K") + seq.count("R") - seq.count(
            "D"
        ) - seq.count("E")
    assert main(args[:-1] + [str(tmp_path / "t.fasta"), "--property", "size=3"]) == 2
    out = tmp_path / "eval.json"
    assert main(["--quiet", "evaluate", str(cvae_run), "--num", "4", "--draws", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["num_heldout"] == len(heldout_arrays(cvae_run)[0]) > 0
    assert (
        0 < saved["nll_per_residue"] < 10
        and "given_own_properties" in saved
        and saved["baselines"]["uniform"] == pytest.approx(20)
    )
    assert "perplexity_unconditional" in saved
    assert 0 <= saved["conditional"]["fraction_assigned_guidance_1"] <= 1
    for name in ("net_charge", "hydrophobic_fraction"):
        entry = saved["property_tracking"][name]
        assert len(entry["requested_grid"]) == 2 and -1 <= entry["spearman"] <= 1
        assert (tmp_path / f"eval_{name}.png").exists()

    # the Python API
    vae = load_vae(cvae_run)
    tokens, family, props, ids = training_arrays(cvae_run)
    held = heldout_arrays(vae)
    assert tokens.shape[1] == 48 and len(tokens) + len(held[0]) == 120
    assert not set(ids) & set(held[3]) and props.shape == (len(tokens), 2)
    assert set(family.tolist()) <= {0, 1, 2} and vae.null_family == 3
    mu, logvar = encode(vae, tokens[:5])
    assert mu.shape == logvar.shape == (5, 4)
    logits = decode_logits(vae, mu, family[:5], props[:5])
    assert logits.shape == (5, 48, 21)
    rows = sample_tokens(vae, jax.random.key(0), mu, None, None, temperature=0)
    assert np.array_equal(rows, decode_logits(vae, mu, None, None).argmax(-1))

    # the comparison hooks
    run = RECIPE.load_run(cvae_run)
    seqs = RECIPE.generate_sequences(run, jax.random.key(1), 3, lengths=np.array([5, 5, 5]),
                                     family="PF00013", options={"temperature": 0.5})  # fmt: skip
    assert len(seqs) == 3 and all(set(s) <= set(alphabet.AMINO_ACIDS) for s in seqs)
    none = np.zeros(0, np.int64)
    assert (
        RECIPE.generate_sequences(run, jax.random.key(1), 0, lengths=none, family="PF00013") == []
    )
    with pytest.raises(DataError, match="PF99999"):
        RECIPE.generate_sequences(run, jax.random.key(1), 0, lengths=none, family="PF99999")
    with pytest.raises(DataError, match="no option 'guidance'"):
        RECIPE.generate_sequences(
            run, jax.random.key(1), 1, lengths=np.ones(1), options={"guidance": 2}
        )
    value, text = RECIPE.sequence_nll(run, ["ACDEFG", "KL" * 40], ["PF00013", None])
    assert 0 < value < 10 and "upper bound" in text and "cropped" in text
    path = RECIPE.latent_interpolation(run, jax.random.key(2), "PF00013", "PF00041", 3, 2)
    assert len(path) == 3 and all(len(p) == 2 for p in path)


def test_plain_vae_refuses_family(slice_fasta, tmp_path, capsys):
    run_dir = tmp_path / "plain"
    args = ["--quiet", "train", "cvae", "--data", str(slice_fasta), "--out", str(run_dir),
            "--steps", "2", "--set", "condition=none"]  # fmt: skip
    assert main(args + [x for s in TINY for x in ("--set", s)]) == 0
    capsys.readouterr()
    code = main(["--quiet", "sample", str(run_dir), "--num", "2", "--family", "PF00013",
                 "--out", str(tmp_path / "s.fasta")])  # fmt: skip
    assert code == 2 and "condition=none" in capsys.readouterr().err
    assert main(["--quiet", "sample", str(run_dir), "--num", "2",
                 "--out", str(tmp_path / "s.fasta")]) == 0  # fmt: skip
    run = RECIPE.load_run(run_dir)
    with pytest.raises(DataError, match="without family labels"):
        RECIPE.generate_sequences(run, jax.random.key(0), 1, lengths=np.ones(1), family="PF00013")
    assert RECIPE.sequence_nll(run, ["ACDEF"], ["PF00013"])[0] > 0


def test_left_out_family_is_written_and_scored_with_the_null_label(slice_fasta, tmp_path):
    run_dir = tmp_path / "left_out"
    args = ["--quiet", "train", "cvae", "--data", str(slice_fasta), "--out", str(run_dir),
            "--steps", "2", "--set", "unseen_families=PF00041"]  # fmt: skip
    assert main(args + [x for s in TINY for x in ("--set", s)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["num_families"] == 2
    unseen = read_records(run_dir / "unseen.fasta")
    assert len(unseen) == 40 and {r.id.split("|")[0] for r in unseen} == {"PF00041"}
    out = tmp_path / "unseen.json"
    assert main(["--quiet", "evaluate", str(run_dir), "--num", "0", "--draws", "1",
                 "--data", str(run_dir / "unseen.fasta"), "--out", str(out)]) == 0  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["num_scored"] == 40 and saved["num_with_known_family"] == 0
    assert saved["num_residues"] == sum(min(len(r.sequence), 48) for r in unseen)
    assert "unconditional" not in saved and 0 < saved["nll_per_residue"] < 10
    bad = ["--quiet", "evaluate", str(run_dir), "--num", "1", "--out", str(tmp_path / "x.json")]
    assert main(bad) == 2
    config = apply_overrides(
        RECIPE.make_config("cvae"), [f"data={slice_fasta}", "unseen_families=PF99999"]
    )
    with pytest.raises(DataError, match="slice.fasta: unseen_families: 'PF99999'"):
        prepare(config)
