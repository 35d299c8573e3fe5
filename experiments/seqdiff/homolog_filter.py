"""Remove the homologs of left-out families from a broad training FASTA (profile search, pyhmmer).

``extra_data`` already drops records that share more than 10% of their 6-mers with a left-out family
(copies and close homologs). A remote member of the same family shares almost no 6-mers, so for a
leave-families-out measurement this script also searches ``--per-family`` random members of each
left-out family against the broad set with ``phmmer`` (HMMER 3 through pyhmmer) and drops every
record that any of them finds with E-value below ``--evalue``::

    pip install pyhmmer          # only this script needs it
    python experiments/seqdiff/homolog_filter.py --extra @cath_s40 --out cath_minus5.fasta \\
        --exclude PF00041 PF00111 PF00168 PF00498 PF12844

The written FASTA holds the kept records (ambiguous-letter records skipped, as training would) and
trains with ``--set extra_data=cath_minus5.fasta``.
"""

from __future__ import annotations

import argparse

import numpy as np

from protgen_jax import alphabet as vocab
from protgen_jax.data import resolve
from protgen_jax.data.fasta import write_fasta
from protgen_jax.data.sequences import SequenceSet, read_sequences, split_families
from protgen_jax.recipes.seqdiff.batches import extra_data_path


def digital(pyhmmer, data: SequenceSet, indices, prefix: str):
    amino = pyhmmer.easel.Alphabet.amino()
    return [
        pyhmmer.easel.TextSequence(
            name=f"{prefix}{i}".encode(), sequence=vocab.decode(data.sequence(i))
        ).digitize(amino)
        for i in indices
    ]


def homologs(
    broad: SequenceSet, family: SequenceSet, per_family: int, evalue: float, seed: int
) -> set[int]:
    """Indices of ``broad`` found by ``phmmer`` from ``per_family`` random members of ``family``."""
    import pyhmmer

    rng = np.random.default_rng(seed)
    queries = digital(pyhmmer, family, rng.permutation(len(family))[:per_family], "q")
    amino = pyhmmer.easel.Alphabet.amino()
    targets = pyhmmer.easel.DigitalSequenceBlock(
        amino, digital(pyhmmer, broad, range(len(broad)), "t")
    )
    found = set()
    for hits in pyhmmer.hmmer.phmmer(queries, targets, E=evalue, cpus=2):
        for hit in hits:
            if hit.evalue < evalue:
                name = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
                found.add(int(name[1:]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", required=True, help="FASTA or @NAME (registry)")
    parser.add_argument("--exclude", nargs="+", required=True, help="the left-out families")
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-family", type=int, default=400)
    parser.add_argument("--evalue", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    broad = read_sequences(extra_data_path(args.extra), family_names=())
    domains = read_sequences(resolve("sequences", "family_domains_train.fasta"))
    _, left_out = split_families(domains, tuple(args.exclude))
    drop: set[int] = set()
    for name in args.exclude:
        members = left_out.subset(
            np.flatnonzero(left_out.labels == domains.family_names.index(name))
        )
        found = homologs(broad, members, args.per_family, args.evalue, args.seed)
        print(f"{name}: {len(members)} members, {len(found)} records of the broad set found")
        drop |= found
    kept = [i for i in range(len(broad)) if i not in drop]
    write_fasta(args.out, [(broad.ids[i], vocab.decode(broad.sequence(i))) for i in kept])
    print(
        f"{args.out}: {len(kept)} of {len(broad)} records kept ({broad.num_skipped} skipped for "
        f"ambiguous letters before), {len(drop)} dropped as homologs (E < {args.evalue:g})"
    )


if __name__ == "__main__":
    main()
