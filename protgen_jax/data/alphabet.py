"""The alignment alphabet: 20 amino acids plus gap, K = 21 int32 tokens.

Token layout::

    0..19   "ACDEFGHIKLMNPQRSTVWY" (alphabetical one-letter codes, as in DeepSequence and EVE)
    20      gap "-"

Rule for non-standard letters. The ambiguity / rare codes X (any), B (D or N), Z (E or Q), J (I or L),
U (selenocysteine) and O (pyrrolysine), and the insert gap ".", all encode to the gap token 20. This is how
DeepSequence's one-hot encoder treats them: any letter outside its 20-letter alphabet becomes an all-zero
row, the same vector a gap gets (DeepSequence and EVE additionally drop whole sequences carrying such letters
in match columns; here the sequence is kept and the letter counts as a gap, which is what
`protgen_jax.data.weights` and `protgen_jax.data.alignment.filter_alignment` then see). Lower case is not a
residue code here: in A2M/A3M files lower case marks insertions, which `read_alignment` drops before
encoding, so `encode` rejects lower-case letters rather than guess.
"""

import chex
import numpy as np

from protgen_jax.errors import DataError

__all__ = [
    "AMINO_ACIDS",
    "ASCII_TO_TOKEN",
    "GAP",
    "GAP_TOKEN",
    "NONSTANDARD",
    "NUM_TOKENS",
    "decode",
    "encode",
]

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
"""The 20 standard amino acids; the letter at index k is token k."""

GAP = "-"
"""The gap character; token `GAP_TOKEN`."""

GAP_TOKEN = 20
"""Token of a gap (and of every non-standard letter, see the module docstring)."""

NUM_TOKENS = 21
"""K: alphabet size, 20 amino acids + gap."""

NONSTANDARD = "BJOUXZ"
"""Upper-case letters that are valid residue codes but encode to `GAP_TOKEN`."""


def _build_table() -> np.ndarray:
    table = np.full(256, -1, dtype=np.int32)
    for token, letter in enumerate(AMINO_ACIDS):
        table[ord(letter)] = token
    for char in NONSTANDARD + GAP + ".":
        table[ord(char)] = GAP_TOKEN
    table.flags.writeable = False
    return table


ASCII_TO_TOKEN = _build_table()
"""int32 [256] lookup from an ASCII byte to its token; -1 for bytes that are not in the alphabet
(lower case included). Used by the vectorised readers: `ASCII_TO_TOKEN[np.frombuffer(b, np.uint8)]`."""


def encode(seq: str) -> np.ndarray:
    """Encode an upper-case aligned sequence into tokens.

    tokens[l] = index of seq[l] in `AMINO_ACIDS`, or `GAP_TOKEN` for "-", "." and the letters in
    `NONSTANDARD`.

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
    """Decode tokens back into a string: token k -> AMINO_ACIDS[k], token 20 -> "-".

    Non-standard letters were encoded as gaps, so `decode(encode(s))` equals `s` with X/B/Z/J/U/O/"."
    replaced by "-".

    Args:
      tokens: integer array [L] with values in 0..20.

    Returns:
      A string of length L.

    Raises:
      DataError: if a token lies outside 0..20.
    """
    tokens = np.asarray(tokens)
    chex.assert_rank(tokens, 1)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= NUM_TOKENS):
        bad = int(np.flatnonzero((tokens < 0) | (tokens >= NUM_TOKENS))[0])
        raise DataError(f"token position {bad}: {int(tokens[bad])} is outside 0..{NUM_TOKENS - 1}")
    letters = np.frombuffer((AMINO_ACIDS + GAP).encode("ascii"), dtype=np.uint8)
    return letters[tokens.astype(np.int64)].tobytes().decode("ascii")
