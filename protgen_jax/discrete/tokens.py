"""Token vocabulary for discrete sequence diffusion (D3PM and OADM).

Index layout (int32 tokens)::

    0..19   the 20 amino acids in the order "ACDEFGHIKLMNPQRSTVWY"
    20      MASK  (the absorbing state of D3PM-absorbing; the "not yet decoded" token of OADM)
    21      PAD   (padding beyond a sequence's length; never a model input class or a target)

Vocabulary sizes ``K`` per method: D3PM with uniform noise diffuses over the 20 amino acids only
(``D3PM_UNIFORM_K = 20``); D3PM-absorbing and OADM add the MASK state (``D3PM_ABSORBING_K = OADM_K =
21``). PAD is outside every ``K``: the math masks padding with ``mask [B, L]`` and never reads the token
there. Note this differs from the alignment alphabet of ``protgen_jax.data`` (index 20 = gap).
"""

import numpy as np

from protgen_jax.errors import DataError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
K_AA = 20
MASK = 20
PAD = 21

D3PM_UNIFORM_K = K_AA
D3PM_ABSORBING_K = K_AA + 1
OADM_K = K_AA + 1

_AA_TO_INDEX = {aa: i for i, aa in enumerate(AMINO_ACIDS)}


def encode(sequence: str) -> np.ndarray:
    """Amino-acid string of length L -> int32 tokens [L] in 0..19.

    Raises DataError naming the first character outside the 20 standard amino acids.
    """
    upper = sequence.upper()
    for position, char in enumerate(upper):
        if char not in _AA_TO_INDEX:
            raise DataError(
                f"sequence position {position}: {char!r} is not one of the 20 amino acids {AMINO_ACIDS}"
            )
    return np.array([_AA_TO_INDEX[char] for char in upper], dtype=np.int32)


def decode(tokens: np.ndarray) -> str:
    """Tokens [L] -> string: amino acids as letters, MASK as "X", PAD dropped."""
    letters = []
    for token in np.asarray(tokens).reshape(-1).tolist():
        if token == PAD:
            continue
        if token == MASK:
            letters.append("X")
        elif 0 <= token < K_AA:
            letters.append(AMINO_ACIDS[token])
        else:
            raise DataError(f"token {token} is outside the vocabulary 0..{PAD}")
    return "".join(letters)
