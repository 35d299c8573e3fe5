"""The `structures_cgdms` dataset built from the cgdms 1.0 wheel (Greener & Jones 2021, MIT, on PyPI).

The wheel holds one text record per chain under `cgdms/protein_data/train_val/<name>.txt`: the one-letter
sequence, the 3-state secondary structure string, then one line per residue of N, CA, C and side-chain
centroid coordinates (12 numbers). `_build_cgdms_pdb` writes the N, CA and C atoms of each chain as a PDB
file `<name>.pdb` (chain A, residues 1..L, as biotite writes them); `_build_cgdms_manifest` writes
manifest.csv (name, split, n_res, sequence, ss3) with the split from `cgdms/datasets/{train,val}.txt`. Two
chains (`_CGDMS_DROPPED`) are left out. Both are `build(wheel, target)` steps of an `ArchiveBuild`
(`protgen_jax.data.sources`), whose result is checked against the sha256 of the shared copy. Standard
library only.
"""

import csv
import io
import zipfile
from pathlib import Path

_CGDMS_CHAINS = "cgdms/protein_data/train_val/"
_CGDMS_DROPPED = ("1LPB_A", "2CVI_A")  # share entries / 3-mers with chains kept out for evaluation
_THREE_LETTER = dict(
    zip(
        "ACDEFGHIKLMNPQRSTVWY",
        "ALA CYS ASP GLU PHE GLY HIS ILE LYS LEU MET ASN PRO GLN ARG SER THR VAL TRP TYR".split(),
        strict=True,
    )
)


def _cgdms_chains(wheel: zipfile.ZipFile) -> dict[str, list[str]]:
    """name -> lines (sequence, 3-state string, one line of N/CA/C/centroid xyz per residue)."""
    chains = {}
    for member in sorted(wheel.namelist()):
        name = member[len(_CGDMS_CHAINS) : -len(".txt")]
        if member.startswith(_CGDMS_CHAINS) and member.endswith(".txt") and "/" not in name:
            if name not in _CGDMS_DROPPED:
                chains[name] = wheel.read(member).decode("ascii").splitlines()
    if not chains:
        raise ValueError(f"no {_CGDMS_CHAINS}*.txt files in the archive")
    return chains


def _backbone_pdb(sequence: str, rows: list[str]) -> str:
    """N, CA and C of every residue as PDB ATOM lines (chain A, residues 1..L), as biotite writes them."""
    lines = []
    for index, (letter, row) in enumerate(zip(sequence, rows, strict=True), 1):
        values = [float(v) for v in row.split()]
        for k, (atom, element) in enumerate((("N", "N"), ("CA", "C"), ("C", "C"))):
            x, y, z = values[3 * k : 3 * k + 3]
            lines.append(
                f"ATOM  {len(lines) + 1:5d}  {atom:<3s} {_THREE_LETTER[letter]} A{index:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}{1:6.2f}{0:6.2f}          {element:>2s}  "
            )
    return "\n".join(lines) + "\n"


def _build_cgdms_pdb(wheel: zipfile.ZipFile, target: Path) -> None:
    target.mkdir()
    for name, lines in _cgdms_chains(wheel).items():
        (target / f"{name}.pdb").write_bytes(_backbone_pdb(lines[0].strip(), lines[2:]).encode())


def _build_cgdms_manifest(wheel: zipfile.ZipFile, target: Path) -> None:
    split = {}
    for part in ("train", "val"):
        for name in wheel.read(f"cgdms/datasets/{part}.txt").decode("ascii").split():
            split[name] = part
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "split", "n_res", "sequence", "ss3"])
    for name, lines in _cgdms_chains(wheel).items():
        sequence = lines[0].strip()
        writer.writerow([name, split.get(name, ""), len(sequence), sequence, lines[1].strip()])
    target.write_bytes(buffer.getvalue().encode("ascii"))
