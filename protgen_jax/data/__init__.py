"""Host-side data: the dataset registry, A2M/FASTA readers, sequence weights, DMS.

Everything here runs on the host in NumPy, except `sequence_weights`, which runs its blocked one-hot
products through jitted JAX kernels. Bad user input raises `protgen_jax.errors.DataError` with a message
naming the file, the record and the problem.
"""

from protgen_jax._lazy import lazy_attributes

# Imported on first use (PEP 562): the registry and the FASTA reader do not need JAX, weights do.
_LAZY = {
    "Alignment": "alignment",
    "filter_alignment": "alignment",
    "read_alignment": "alignment",
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
__getattr__, __dir__ = lazy_attributes(
    __name__, {name: f"protgen_jax.data.{module}" for name, module in _LAZY.items()}
)
__all__ = sorted(_LAZY)
