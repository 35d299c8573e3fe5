"""The JAX half of benchmarks/vs_torch.py at toy sizes, without torch (an optional bench extra)."""

import json
import sys

import pytest

from benchmarks import vs_torch


def test_missing_torch_skips_its_rows_with_a_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert vs_torch.import_torch() is None
    assert "torch is not installed: the PyTorch rows are skipped" in capsys.readouterr().err


def test_jax_rows_time_write_json_and_markdown(tmp_path):
    report = vs_torch.run(vs_torch.TINY, use_torch=False, out=tmp_path)
    rows = report["rows"]
    names = [r["workload"] for r in rows]
    assert names[0].startswith("GEMM roofline")
    assert any(n.startswith("VAE train step") and "lax.scan" in n for n in names)
    assert sum(n.startswith("DDPM sampling") for n in names) == len(vs_torch.TINY.sample_batches)
    for r in rows:
        assert r["torch"] is None and r["ratio"] is None
        assert r["jax"] > 0 and len(r["jax_blocks_s"]) == vs_torch.TINY.repeats
        assert r["jax_compile_s"] >= 0
    assert rows[0]["jax_fraction_of_peak"] == pytest.approx(1.0)  # the GEMM row: the peak
    vae_row = next(r for r in rows if r["workload"].startswith("VAE train"))
    s = vs_torch.TINY
    lk, h, d = s.seq_len * s.vocab, s.vae_hidden, s.latent
    expected = (
        (lk * h + h) + (h * h + h) + 2 * (h * d + d) + (d * h + h) + (h * h + h) + (h * lk + lk)
    )
    assert vae_row["params_jax"] == expected
    saved = json.loads((tmp_path / "vs_torch.json").read_text())
    assert [r["workload"] for r in saved["rows"]] == names
    table = (tmp_path / "vs_torch.md").read_text()
    assert table == report["markdown"] and "| GEMM roofline" in table
