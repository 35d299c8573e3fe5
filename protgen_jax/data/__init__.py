"""Host-side data: the dataset registry, the alignment alphabet, A2M/FASTA readers, sequence weights, DMS.

Everything here runs on the host in NumPy, except `sequence_weights`, which runs its blocked one-hot
products through jitted JAX kernels. Bad user input raises `protgen_jax.errors.DataError` with a message
naming the file, the record and the problem.
"""

from protgen_jax.data.alignment import Alignment, filter_alignment, read_alignment
from protgen_jax.data.alphabet import (
    AMINO_ACIDS,
    GAP,
    GAP_TOKEN,
    NONSTANDARD,
    NUM_TOKENS,
    decode,
    encode,
)
from protgen_jax.data.dms import MutantMap, map_mutants, mutant_tokens, parse_mutant, read_dms
from protgen_jax.data.fasta import read_fasta, write_fasta
from protgen_jax.data.registry import fetch, list_datasets, resolve
from protgen_jax.data.weights import effective_sample_size, sequence_weights

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
