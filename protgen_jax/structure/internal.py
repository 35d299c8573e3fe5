"""Internal coordinates of an N-CA-C backbone and their exact inverse (NeRF), as in FoldingDiff.

Per residue ``i`` the six angles (radians, ``ANGLE_NAMES`` order) are

==========  ============================================  ====================================
name        definition                                    undefined for
==========  ============================================  ====================================
``phi``     dihedral(C_{i-1}, N_i, CA_i, C_i)             ``i = 0`` or a break before ``i``
``psi``     dihedral(N_i, CA_i, C_i, N_{i+1})             ``i = L-1`` or a break after ``i``
``omega``   dihedral(CA_i, C_i, N_{i+1}, CA_{i+1})        ``i = L-1`` or a break after ``i``
``n_ca_c``  angle(N_i, CA_i, C_i)                         never (inside the residue)
``ca_c_n``  angle(CA_i, C_i, N_{i+1})                     ``i = L-1`` or a break after ``i``
``c_n_ca``  angle(C_i, N_{i+1}, CA_{i+1})                 ``i = L-1`` or a break after ``i``
==========  ============================================  ====================================

and every angle that touches a missing (NaN) atom is undefined too; :func:`internal_coordinates` returns
the angles ``[L, 6]`` (0 where undefined) and the mask ``[L, 6]``. Angles wrap to ``[-pi, pi)``.

Reconstruction (:func:`backbone_from_internal`, jax.numpy, runs inside ``jit`` / ``vmap``) places residue
0 in a fixed frame (N at the origin, CA on +x, C in the xy plane) and then, for ``i = 0 .. L-2``, with
NeRF (:func:`protgen_jax.structure.atoms.nerf_place`) and the ideal bond lengths ``BOND_LENGTHS``:

    N_{i+1}  = place(N_i,  CA_i, C_i,      C-N,  ca_c_n_i,      psi_i)
    CA_{i+1} = place(CA_i, C_i,  N_{i+1},  N-CA, c_n_ca_i,      omega_i)
    C_{i+1}  = place(C_i,  N_{i+1}, CA_{i+1}, CA-C, n_ca_c_{i+1}, phi_{i+1})

so the values at undefined positions (phi_0, and psi, omega, ca_c_n, c_n_ca of the last residue) are never
read. A chain without breaks is reproduced up to a rigid motion and the difference between its bond
lengths and the ideal ones (a few hundredths of an Å of RMSD, see tests/test_foldingdiff.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from protgen_jax.structure.atoms import nerf_place

__all__ = [
    "ANGLE_NAMES",
    "BOND_LENGTHS",
    "IDEAL_ANGLES",
    "backbone_from_internal",
    "bond_angle",
    "dihedral",
    "internal_coordinates",
    "random_internal",
    "wrap_angle",
]

ANGLE_NAMES = ("phi", "psi", "omega", "n_ca_c", "ca_c_n", "c_n_ca")
"""The six internal coordinates of a residue, in the order of the last axis of ``[L, 6]`` arrays."""

BOND_LENGTHS = {"n_ca": 1.458, "ca_c": 1.525, "c_n": 1.329}
"""Å, ideal backbone bond lengths (Engh & Huber 1991), used by the reconstruction."""

IDEAL_ANGLES = np.deg2rad([-60.0, -45.0, 180.0, 111.2, 116.2, 121.7])
"""Radians: an alpha-helical residue with Engh & Huber bond angles (``ANGLE_NAMES`` order)."""


def wrap_angle(x: np.ndarray) -> np.ndarray:
    """``(x + pi) mod 2 pi - pi``: angles to ``[-pi, pi)`` (host-side NumPy; JAX code uses
    :func:`protgen_jax.diffusion.torus.wrap`)."""
    return np.mod(np.asarray(x) + np.pi, 2 * np.pi) - np.pi


def dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Dihedral angle (radians, ``(-pi, pi]``) of ``[..., 3]`` atoms a-b-c-d, IUPAC sign convention."""
    b1, b2, b3 = b - a, c - b, d - c
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    return np.arctan2(y, np.sum(n1 * n2, axis=-1))


def bond_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle a-b-c (radians, ``[0, pi]``) of ``[..., 3]`` atoms."""
    u, v = a - b, c - b
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def internal_coordinates(
    backbone: np.ndarray, breaks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The six internal coordinates of every residue (module docstring), computed in float64.

    Args:
      backbone: [L, 3, 3] N, CA, C in Å (NaN for missing atoms), L >= 1.
      breaks: indices i where residues i and i + 1 are not bonded (e.g. ``Chain.breaks``).

    Returns:
      (angles [L, 6] float32 in [-pi, pi), 0 where undefined; mask [L, 6] bool, True where defined).
    """
    x = np.asarray(backbone, np.float64)
    if x.ndim != 3 or x.shape[1:] != (3, 3) or x.shape[0] < 1:
        raise ValueError(f"internal_coordinates needs [L, 3, 3] N, CA, C, got {x.shape}")
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    length = len(x)
    bonded = np.ones(max(length - 1, 0), bool)  # residue i bonded to i + 1
    if breaks is not None and len(breaks):
        bonded[np.asarray(breaks, np.int64)] = False
    angles = np.zeros((length, 6))
    mask = np.zeros((length, 6), bool)
    with np.errstate(invalid="ignore"):
        angles[:, 3] = bond_angle(n, ca, c)
        mask[:, 3] = True
        if length > 1:
            nxt_n, nxt_ca = n[1:], ca[1:]
            angles[1:, 0] = dihedral(c[:-1], n[1:], ca[1:], c[1:])
            angles[:-1, 1] = dihedral(n[:-1], ca[:-1], c[:-1], nxt_n)
            angles[:-1, 2] = dihedral(ca[:-1], c[:-1], nxt_n, nxt_ca)
            angles[:-1, 4] = bond_angle(ca[:-1], c[:-1], nxt_n)
            angles[:-1, 5] = bond_angle(c[:-1], nxt_n, nxt_ca)
            mask[1:, 0] = bonded
            mask[:-1, [1, 2, 4, 5]] = bonded[:, None]
    mask &= np.isfinite(angles)
    angles = np.where(mask, wrap_angle(angles), 0.0)
    return angles.astype(np.float32), mask


def _first_residue(n_ca_c: jax.Array) -> jax.Array:
    """[..., 3, 3]: N at the origin, CA on +x, C in the xy plane at angle ``n_ca_c`` ``[...]``."""
    zeros = jnp.zeros_like(n_ca_c)
    n = jnp.stack([zeros, zeros, zeros], -1)
    ca = jnp.stack([zeros + BOND_LENGTHS["n_ca"], zeros, zeros], -1)
    theta = jnp.pi - n_ca_c  # C = CA + |CA-C| (cos(pi - angle), sin(pi - angle), 0)
    c = ca + BOND_LENGTHS["ca_c"] * jnp.stack([jnp.cos(theta), jnp.sin(theta), zeros], -1)
    return jnp.stack([n, ca, c], -2)


def backbone_from_internal(angles: jax.Array) -> jax.Array:
    """N, CA, C coordinates from internal coordinates by NeRF with ideal bond lengths (module docstring).

    Args:
      angles: [..., L, 6] radians in ``ANGLE_NAMES`` order (values at undefined positions are ignored).

    Returns:
      [..., L, 3, 3] float32 N, CA, C in Å (residue 0 in the fixed frame of the module docstring).
    """
    angles = jnp.asarray(angles, jnp.float32)
    if angles.ndim < 2 or angles.shape[-1] != 6:
        raise ValueError(f"backbone_from_internal needs [..., L, 6] angles, got {angles.shape}")
    lead = angles.shape[:-2]
    first = _first_residue(angles[..., 0, 3])

    def step(prev, pair):
        here, nxt = pair  # angles of residue i and of residue i + 1, [..., 6] each
        n, ca, c = prev[..., 0, :], prev[..., 1, :], prev[..., 2, :]
        n1 = nerf_place(n, ca, c, BOND_LENGTHS["c_n"], here[..., 4], here[..., 1])
        ca1 = nerf_place(ca, c, n1, BOND_LENGTHS["n_ca"], here[..., 5], here[..., 2])
        c1 = nerf_place(c, n1, ca1, BOND_LENGTHS["ca_c"], nxt[..., 3], nxt[..., 0])
        out = jnp.stack([n1, ca1, c1], -2)
        return out, out

    moved = jnp.moveaxis(angles, -2, 0)  # [L, ..., 6]
    _, rest = jax.lax.scan(step, first, (moved[:-1], moved[1:]))
    coords = jnp.concatenate([first[None], rest], axis=0)  # [L, ..., 3, 3]
    out = jnp.moveaxis(coords, 0, -3)
    assert out.shape == (*lead, angles.shape[-2], 3, 3)
    return out


def random_internal(rng: np.random.Generator, length: int) -> np.ndarray:
    """[L, 6] internal coordinates of a random-torsion chain: phi and psi uniform on ``[-pi, pi)``,
    trans omega (pi) and the ideal bond angles of ``IDEAL_ANGLES`` (the floor for generated backbones:
    perfect local chemistry, no preference of torsions)."""
    angles = np.tile(IDEAL_ANGLES, (length, 1))
    angles[:, :2] = rng.uniform(-np.pi, np.pi, (length, 2))
    angles[:, 2] = np.pi
    return angles.astype(np.float32)
