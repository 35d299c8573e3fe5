"""Uniform random rotations in SO(3) and their application to coordinates.

Rotations are drawn as the Q factor of the QR decomposition of a 3x3 standard Gaussian matrix, with the
sign of each column fixed so that diag(R) > 0 (Mezzadri 2007, "How to generate random matrices from the
classical compact groups"); that Q is Haar-distributed on O(3). Those with det(Q) = -1 are mapped to SO(3)
by negating their first column (right-multiplication by diag(-1, 1, 1)), which preserves the Haar measure,
so the result is uniform on SO(3).

A NumPy twin (`random_rotation_np`) serves host-side data augmentation; the JAX version runs inside a jitted
training step.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["apply_rotation", "random_rotation", "random_rotation_np"]


def _haar_from_gaussian_np(gauss: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(gauss)
    diag_sign = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    diag_sign[diag_sign == 0] = 1.0
    q = q * diag_sign[..., None, :]
    q[..., :, 0] *= np.sign(np.linalg.det(q))[..., None]
    return q


def random_rotation_np(rng: np.random.Generator, num: int) -> np.ndarray:
    """Draw `num` rotation matrices uniformly from SO(3) with NumPy.

    Q R = G with G_ij ~ N(0, 1); Q <- Q diag(sign(R_ii)); Q[:, 0] <- det(Q) Q[:, 0].

    Args:
      rng: a NumPy random generator.
      num: number of rotations B.

    Returns:
      [B, 3, 3] float32 rotation matrices (orthogonal, det +1).
    """
    gauss = rng.standard_normal((num, 3, 3))
    return _haar_from_gaussian_np(gauss).astype(np.float32)


def random_rotation(key: jax.Array, num: int) -> jax.Array:
    """Draw `num` rotation matrices uniformly from SO(3) with JAX (jit-friendly).

    Q R = G with G_ij ~ N(0, 1); Q <- Q diag(sign(R_ii)); Q[:, 0] <- det(Q) Q[:, 0].

    Args:
      key: a JAX PRNG key.
      num: number of rotations B (static).

    Returns:
      [B, 3, 3] float32 rotation matrices (orthogonal, det +1).
    """
    gauss = jax.random.normal(key, (num, 3, 3), dtype=jnp.float32)
    q, r = jnp.linalg.qr(gauss)
    diag_sign = jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))
    # sign(0) has probability zero for Gaussian input, but keep the matrix orthogonal regardless.
    diag_sign = jnp.where(diag_sign == 0, 1.0, diag_sign)
    q = q * diag_sign[:, None, :]
    det_sign = jnp.sign(jnp.linalg.det(q))
    q = q.at[:, :, 0].multiply(det_sign[:, None])
    chex.assert_shape(q, (num, 3, 3))
    return q


def apply_rotation(rotations: jax.Array, coords: jax.Array) -> jax.Array:
    """Rotate each structure of a batch about the origin: x'_bl = R_b x_bl.

    Centre the coordinates first (`protgen_jax.data.structures.center`) to rotate about the centre of mass;
    padded positions at the origin stay at the origin.

    Args:
      rotations: [B, 3, 3] rotation matrices.
      coords: [B, L, 3] coordinates.

    Returns:
      [B, L, 3] rotated coordinates.
    """
    chex.assert_rank(coords, 3)
    chex.assert_shape(rotations, (coords.shape[0], 3, 3))
    return jnp.einsum("bij,blj->bli", rotations, coords)
