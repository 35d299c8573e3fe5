"""The one token alphabet of every model: 20 amino acids, then gap, mask and pad as distinct tokens.

Token layout (int32)::

    0..19   "ACDEFGHIKLMNPQRSTVWY" (alphabetical one-letter codes, as in DeepSequence and EVE)
    20      GAP   "-"  an alignment gap (and, in aligned data, every non-standard letter; see below)
    21      MASK  "#"  the absorbing state of D3PM-absorbing, OADM's "not yet decoded", a position to
                       fill in an inpainting template
    22      PAD        padding beyond a sequence's end; never a model class nor a target

A model's class space is always a prefix of this layout, so a class index is a token index:

    K_AA       = 20   amino acids (D3PM-uniform, sequence-diffusion outputs, unaligned statistics)
    K_ALIGNED  = 21   amino acids + GAP (the sequence VAE, site-independent models, sequence weights)
    K_ABSORBING = 22  amino acids + GAP + MASK (D3PM-absorbing; unaligned data never visits GAP)
    VOCAB_SIZE = 23   every token (the one-hot width of a network input that may see MASK and PAD)

Aligned letters (`encode`). The ambiguity / rare codes X (any), B (D or N), Z (E or Q), J (I or L),
U (selenocysteine) and O (pyrrolysine), and the insert gap ".", encode to GAP. This is how DeepSequence's
one-hot encoder treats them: any letter outside its 20-letter alphabet becomes an all-zero row, the same
vector a gap gets (DeepSequence and EVE additionally drop whole sequences carrying such letters in match
columns; here the sequence is kept and the letter counts as a gap, which is what
`protgen_jax.data.weights` and `protgen_jax.data.alignment.filter_alignment` then see). Lower case is not
a residue code here: in A2M/A3M files lower case marks insertions, which `read_alignment` drops before
encoding, so `encode` rejects lower-case letters rather than guess. Unaligned sequences follow their own
letter rule (`protgen_jax.data.sequences`) onto the same tokens.
"""

import chex
import numpy as np

from protgen_jax.errors import DataError

__all__ = [
    "AMINO_ACIDS",
    "ASCII_TO_TOKEN",
    "GAP",
    "GAP_CHAR",
    "K_AA",
    "K_ABSORBING",
    "K_ALIGNED",
    "LAYOUT",
    "MASK",
    "MASK_CHAR",
    "NONSTANDARD",
    "PAD",
    "VOCAB_SIZE",
    "decode",
    "encode",
]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
"""The 20 standard amino acids; the letter at index k is token k."""

GAP, MASK, PAD = 20, 21, 22
"""Tokens of a gap, a masked (to be generated) position and padding."""

GAP_CHAR, MASK_CHAR = "-", "#"
"""How `decode` writes GAP and MASK (PAD is dropped)."""

K_AA, K_ALIGNED, K_ABSORBING, VOCAB_SIZE = 20, 21, 22, 23
"""Class-space sizes: amino acids; + GAP; + MASK; every token including PAD."""

LAYOUT = "aa0-19,gap20,mask21,pad22"
"""The layout above, as recorded in a run's ``run.json`` (runs that saved tokens need the same one)."""

NONSTANDARD = "BJOUXZ"
"""Upper-case letters that are valid residue codes but encode to `GAP` in aligned data."""


def _build_table() -> np.ndarray:
    table = np.full(256, -1, dtype=np.int32)
    for token, letter in enumerate(AMINO_ACIDS):
        table[ord(letter)] = token
    for char in NONSTANDARD + GAP_CHAR + ".":
        table[ord(char)] = GAP
    table.flags.writeable = False
    return table


ASCII_TO_TOKEN = _build_table()
"""int32 [256] lookup from an ASCII byte to its aligned token; -1 for bytes that are not in the alphabet
(lower case included). Used by the vectorised readers: `ASCII_TO_TOKEN[np.frombuffer(b, np.uint8)]`."""

_LETTERS = np.frombuffer((AMINO_ACIDS + GAP_CHAR + MASK_CHAR + "\0").encode("ascii"), np.uint8)


def encode(seq: str) -> np.ndarray:
    """Encode an upper-case aligned sequence into tokens.

    tokens[l] = index of seq[l] in `AMINO_ACIDS`, or `GAP` for "-", "." and the letters in `NONSTANDARD`.

    Args:
      seq: string of length L over upper-case letters, "-" and ".".

    Returns:
      np.int32 [L] tokens in 0..20.

    Raises:
      DataError: naming the first character outside the alphabet (lower case included) and its position.
    """
    try:
        raw = seq.encode("ascii")
    except UnicodeEncodeError as err:
        raise DataError(
            f"sequence position {err.start}: {seq[err.start]!r} is not an amino-acid code"
        ) from None
    tokens = ASCII_TO_TOKEN[np.frombuffer(raw, dtype=np.uint8)]
    bad = np.flatnonzero(tokens < 0)
    if bad.size:
        position = int(bad[0])
        char = seq[position]
        hint = ""
        if char.islower():
            hint = " (lower case marks A2M insertions; read the file with read_alignment)"
        raise DataError(f"sequence position {position}: {char!r} is not an amino-acid code{hint}")
    return tokens.astype(np.int32)


def decode(tokens: np.ndarray) -> str:
    """Tokens [L] -> string: k -> AMINO_ACIDS[k], GAP -> "-", MASK -> "#", PAD dropped.

    Non-standard letters were encoded as gaps, so `decode(encode(s))` equals `s` with X/B/Z/J/U/O/"."
    replaced by "-".

    Raises:
      DataError: if tokens is not rank 1 or a token lies outside 0..22.
    """
    tokens = np.asarray(tokens)
    chex.assert_rank(tokens, 1)
    outside = (tokens < 0) | (tokens >= VOCAB_SIZE)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise DataError(f"token position {bad}: {int(tokens[bad])} is outside 0..{VOCAB_SIZE - 1}")
    kept = tokens[tokens != PAD].astype(np.int64)
    return _LETTERS[kept].tobytes().decode("ascii")
