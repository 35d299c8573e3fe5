"""Host-side data: the dataset registry, the alignment alphabet, A2M/FASTA readers, sequence weights, DMS.

Everything here runs on the host in NumPy, except `sequence_weights`, which runs its blocked one-hot
products through jitted JAX kernels. Bad user input raises `protgen_jax.errors.DataError` with a message
naming the file, the record and the problem.
"""

import importlib
from typing import Any

# Imported on first use (PEP 562): the registry and the FASTA reader do not need JAX, weights do.
_LAZY = {
    "Alignment": "alignment",
    "filter_alignment": "alignment",
    "read_alignment": "alignment",
    "AMINO_ACIDS": "alphabet",
    "GAP": "alphabet",
    "GAP_TOKEN": "alphabet",
    "NONSTANDARD": "alphabet",
    "NUM_TOKENS": "alphabet",
    "decode": "alphabet",
    "encode": "alphabet",
    "MutantMap": "dms",
    "map_mutants": "dms",
    "mutant_tokens": "dms",
    "parse_mutant": "dms",
    "read_dms": "dms",
    "read_fasta": "fasta",
    "write_fasta": "fasta",
    "fetch": "registry",
    "list_datasets": "registry",
    "resolve": "registry",
    "effective_sample_size": "weights",
    "sequence_weights": "weights",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"protgen_jax.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'protgen_jax.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AMINO_ACIDS",
    "GAP",
    "GAP_TOKEN",
    "NONSTANDARD",
    "NUM_TOKENS",
    "Alignment",
    "MutantMap",
    "decode",
    "effective_sample_size",
    "encode",
    "fetch",
    "filter_alignment",
    "list_datasets",
    "map_mutants",
    "mutant_tokens",
    "parse_mutant",
    "read_alignment",
    "read_dms",
    "read_fasta",
    "resolve",
    "sequence_weights",
    "write_fasta",
]
