"""Backbone atoms that a file or a model does not give: the carbonyl O and ProteinMPNN's virtual C-beta.

Both are exact functions of the N, CA, C atoms (written with `jax.numpy`, so they run on NumPy input, inside
`jit` and under `vmap`):

- O_i lies in the peptide plane of CA_i, C_i, N_{i+1}, on the outer bisector of the two bonds at C_i:
  O_i = C_i + 1.231 Å * unit(unit(C_i - CA_i) + unit(C_i - N_{i+1})). With ideal geometry
  (CA-C-N 116.2°) this gives CA-C-O 121.9° and O=C-N 121.9° (Engh & Huber: 120.1° and 122.7°; each
  within 2°). The last residue has no N_{i+1}; its O is placed by NeRF at CA-C-O 120.5° with the
  dihedral N-CA-C-O = 180° (a trans placement; its true value depends on psi, which the last residue
  lacks).
- CB_i = -0.58273431 a + 0.56802827 b - 0.54067466 c + CA_i with b = CA_i - N_i, c = C_i - CA_i,
  a = b x c (the ideal tetrahedral C-beta of ProteinMPNN, Dauparas et al. 2022).
"""

import jax.numpy as jnp

__all__ = ["C_O_BOND", "nerf_place", "place_oxygen", "virtual_cb", "with_oxygen"]

C_O_BOND = 1.231
"""Å, the carbonyl C=O bond length (Engh & Huber 1991)."""

_CA_C_O_ANGLE = jnp.deg2rad(120.5)


def _unit(v: jnp.ndarray) -> jnp.ndarray:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-8)


def nerf_place(
    a: jnp.ndarray,
    b: jnp.ndarray,
    c: jnp.ndarray,
    bond: jnp.ndarray,
    angle: jnp.ndarray,
    torsion: jnp.ndarray,
) -> jnp.ndarray:
    """The atom d with |c - d| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion (NeRF).

    Natural Extension Reference Frame (Parsons et al. 2005): with bc = unit(c - b), n = unit((b - a) x bc)
    and m = n x bc, d = c + bond * (-cos(angle) bc + sin(angle) cos(torsion) m + sin(angle) sin(torsion) n).

    Args:
      a, b, c: [..., 3] the three preceding atoms.
      bond: [...] Å; angle, torsion: [...] radians (broadcast against the atoms' leading axes).

    Returns:
      [..., 3] the placed atom.
    """
    bc = _unit(c - b)
    n = _unit(jnp.cross(b - a, bc))
    m = jnp.cross(n, bc)
    values = [jnp.asarray(v) for v in (bond, angle, torsion)]
    lead = jnp.broadcast_shapes(c.shape[:-1], *(v.shape for v in values))  # no rank promotion
    bond, angle, torsion = (jnp.broadcast_to(v, lead)[..., None] for v in values)
    step = -jnp.cos(angle) * bc + jnp.sin(angle) * (jnp.cos(torsion) * m + jnp.sin(torsion) * n)
    return c + bond * step


def place_oxygen(backbone: jnp.ndarray) -> jnp.ndarray:
    """Carbonyl oxygens of a chain (module docstring).

    Args:
      backbone: [..., L, 3, 3] N, CA, C in Å, consecutive residues bonded.

    Returns:
      [..., L, 3] O coordinates.
    """
    n, ca, c = backbone[..., 0, :], backbone[..., 1, :], backbone[..., 2, :]
    inner = c[..., :-1, :] + C_O_BOND * _unit(
        _unit(c[..., :-1, :] - ca[..., :-1, :]) + _unit(c[..., :-1, :] - n[..., 1:, :])
    )
    last = nerf_place(n[..., -1, :], ca[..., -1, :], c[..., -1, :], C_O_BOND, _CA_C_O_ANGLE, jnp.pi)
    return jnp.concatenate([inner, last[..., None, :]], axis=-2)


def with_oxygen(backbone: jnp.ndarray) -> jnp.ndarray:
    """[..., L, 3, 3] N, CA, C -> [..., L, 4, 3] N, CA, C, O."""
    return jnp.concatenate([backbone, place_oxygen(backbone)[..., None, :]], axis=-2)


def virtual_cb(backbone: jnp.ndarray) -> jnp.ndarray:
    """Virtual C-beta positions (module docstring).

    Args:
      backbone: [..., L, 3, 3] (or [..., L, 4, 3]) N, CA, C(, O) in Å.

    Returns:
      [..., L, 3] CB coordinates.
    """
    n, ca, c = backbone[..., 0, :], backbone[..., 1, :], backbone[..., 2, :]
    b = ca - n
    cc = c - ca
    a = jnp.cross(b, cc)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca
