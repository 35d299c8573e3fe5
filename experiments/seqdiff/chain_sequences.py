"""Write the protein chains of the structure datasets as a FASTA of "proteins in general".

The chain sequences of ``structures`` (263 PDB chains) and ``structures_cgdms`` (2,202 chains) come
from their manifests (read through the dataset registry). A chain is dropped when it repeats an
earlier chain's sequence, or when more than ``--max-overlap`` of its 6-mers occur in a sequence of one
of the ``--exclude`` families of the domain set: the families a leave-families-out run never saw, so
the file holds no close homolog of them. Headers carry no ``FAMILY|`` prefix, so a run scores these
chains with its null label.

Used to calibrate the background weight of ``protgen evaluate RUN --background-mix`` on sequences
that are neither the training families nor the left-out ones::

    python experiments/seqdiff/chain_sequences.py --out chains.fasta \\
        --exclude PF00041 PF00111 PF00168 PF00498 PF12844

and, with ``--with-domains --repeat K``, to write a broader training file: the domain set followed
by K copies of the chains (ids ``NAME.k``; unlabelled, so they train the null label), which raises
the chains' share of training draws (3% of the sequences once; 19% with K = 8 and five families
left out). That file reproduces the chains run of ``experiments/seqdiff/README.md``; the recipe's own
way is ``--set extra_data=chains.fasta --set extra_fraction=0.2``, which keeps the copies out of the
validation split and sets the share directly.
"""

from __future__ import annotations

import argparse
import csv

from protgen_jax.data import resolve
from protgen_jax.data.fasta import read_records, write_fasta

K = 6


def kmers(sequence: str) -> set[str]:
    return {sequence[i : i + K] for i in range(len(sequence) - K + 1)}


def chains() -> list[tuple[str, str]]:
    """``(name, sequence)`` of every manifest row of both structure datasets, in file order."""
    out = []
    for dataset, column in (("structures", "seq"), ("structures_cgdms", "sequence")):
        with open(resolve(dataset, "manifest.csv"), newline="") as handle:
            out += [(row["name"], row[column]) for row in csv.DictReader(handle)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--exclude", nargs="*", default=[], help="families of the domain set")
    parser.add_argument("--max-overlap", type=float, default=0.1)
    parser.add_argument("--with-domains", action="store_true", help="the domain set first")
    parser.add_argument("--repeat", type=int, default=1, help="copies of each chain")
    args = parser.parse_args()
    excluded, domains = set(), read_records(resolve("sequences", "family_domains_train.fasta"))
    for record in domains:
        if record.id.split("|")[0] in args.exclude:
            excluded |= kmers(record.sequence)
    seen, kept, dropped = set(), [], 0
    for name, sequence in chains():
        own = kmers(sequence)
        if sequence in seen or not own:
            continue
        seen.add(sequence)
        if len(own & excluded) > args.max_overlap * len(own):
            dropped += 1
            continue
        kept.append((name, sequence))
    records = [(r.id, r.sequence) for r in domains] if args.with_domains else []
    if args.repeat == 1:
        records += kept
    else:
        records += [(f"{name}.{k}", seq) for k in range(args.repeat) for name, seq in kept]
    write_fasta(args.out, records)
    print(f"{args.out}: {len(kept)} chains ({dropped} dropped for overlap with {args.exclude})")


if __name__ == "__main__":
    main()
