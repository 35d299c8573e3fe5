"""Sampling C-alpha backbones of given lengths from a coordinate denoiser, with motifs and trajectories.

``sample_backbones`` runs the DDPM or DDIM reverse process (``protgen_jax.diffusion``) in model units
(Å / ``COORD_SCALE``) with zero-centre-of-mass noise and a centred prediction
(``structure.noise.centred_denoise_fn``), in chunks of ``batch_size`` that share one compiled scan of
shape ``[batch_size, pad_to, 3]``: residues past each length are masked padding, and the last chunk is
filled up by repeating its last length, so mixed lengths compile once. Chunk ``c`` starting at request
``s`` uses ``fold_in(key, s)``.

Motif scaffolding keeps given coordinates fixed by replacement (the samplers' ``known`` /
``known_mask``): the motif, centred on its own centroid, sits at the same place in every sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from tqdm.auto import tqdm

from protgen_jax.data.structures import COORD_SCALE
from protgen_jax.diffusion import Schedule, ddim_sample, ddim_timesteps, ddpm_sample
from protgen_jax.errors import DataError
from protgen_jax.structure.noise import centred_denoise_fn, zero_com_noise

TRAJECTORY_FRAMES = 50
"""At most this many frames per trajectory (every ``stride``-th reverse step)."""

__all__ = ["TRAJECTORY_FRAMES", "sample_backbones", "trajectory_stride"]


def trajectory_stride(num_steps: int) -> int:
    """The smallest divisor of ``num_steps`` giving at most ``TRAJECTORY_FRAMES`` frames."""
    for stride in range(max(1, num_steps // TRAJECTORY_FRAMES), num_steps + 1):
        if num_steps % stride == 0 and num_steps // stride <= TRAJECTORY_FRAMES:
            return stride
    return num_steps


def sample_backbones(
    key: jax.Array,
    denoise_fn: Partial,
    schedule: Schedule,
    lengths: Sequence[int],
    *,
    batch_size: int = 64,
    sampler: str = "ddpm",
    ddim_steps: int = 100,
    variance: str = "beta",
    noise_scale: float = 1.0,
    clip_x0: float | None = None,
    pad_to: int | None = None,
    motif: tuple[np.ndarray, np.ndarray] | None = None,
    trajectory: bool = False,
    progress: bool = True,
    self_condition: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """One backbone per requested length: ``([L_i, 3] float32 Å arrays, [F, L_i, 3] trajectories or None)``.

    Args:
      key: the sampling key (chunk ``c`` at request ``s`` uses ``fold_in(key, s)``).
      denoise_fn: ``(x_t [B, L, 3], t [B], mask [B, L], positions [B, L]) -> eps``, a ``Partial``.
      schedule: the noise schedule the network was trained with.
      lengths: residues per backbone (each <= ``pad_to``).
      batch_size: backbones per compiled sampler call.
      sampler: ``"ddpm"`` (``variance``, ``noise_scale`` apply) or ``"ddim"`` (``ddim_steps``, eta 0).
      clip_x0: clip the predicted x0 to +-this (model units), None = off.
      pad_to: padded length of every call (default the longest length).
      motif: ``(indices [M], coords [M, 3] Å)`` kept fixed in every sample.
      trajectory: also return about ``TRAJECTORY_FRAMES`` frames per sample, noise to sample.
      self_condition: the network takes the previous step's x0 estimate (``self_cond``).
    """
    if sampler not in ("ddpm", "ddim"):
        raise DataError(f"unknown sampler {sampler!r}; expected 'ddpm' or 'ddim'")
    length = int(pad_to or max(lengths))
    chunk = min(batch_size, len(lengths))
    num_steps = (
        schedule.num_steps
        if sampler == "ddpm"
        else len(ddim_timesteps(schedule.num_steps, ddim_steps))
    )
    stride = trajectory_stride(num_steps) if trajectory else 0
    fn = centred_denoise_fn(denoise_fn, schedule)
    known = known_mask = None
    if motif is not None:
        indices, coords = motif
        placed = np.zeros((length, 3), np.float32)
        placed[indices] = (coords - coords.mean(axis=0)) / COORD_SCALE
        where = np.zeros((length, 1), bool)
        where[indices] = True
        known = jnp.broadcast_to(jnp.asarray(placed), (chunk, length, 3))
        known_mask = jnp.broadcast_to(jnp.asarray(where), (chunk, length, 1))
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (chunk, length))
    common = dict(
        cond=positions, trajectory_stride=stride, known=known, known_mask=known_mask,
        noise_transform=Partial(zero_com_noise), clip_x0=clip_x0, self_condition=self_condition,
    )  # fmt: skip
    samples, trajectories = [], [] if trajectory else None
    for start in tqdm(
        range(0, len(lengths), chunk), desc=f"sampling ({sampler})", disable=not progress
    ):
        lens = list(lengths[start : start + chunk])
        real = len(lens)
        lens += [lens[-1]] * (chunk - real)  # keep the compiled shape for the last chunk
        mask = jnp.asarray(np.arange(length)[None, :] < np.asarray(lens)[:, None])
        step_key, shape = jax.random.fold_in(key, start), (chunk, length, 3)
        if sampler == "ddpm":
            out = ddpm_sample(
                step_key, fn, schedule, shape, mask=mask, variance=variance,
                noise_scale=noise_scale, **common,
            )  # fmt: skip
        else:
            out = ddim_sample(
                step_key, fn, schedule, shape, mask=mask, num_steps=ddim_steps, **common
            )
        x, traj = out if trajectory else (out, None)
        x = np.asarray(jax.device_get(x), np.float64) * COORD_SCALE
        traj = None if traj is None else np.asarray(jax.device_get(traj), np.float64) * COORD_SCALE
        for i in range(real):
            samples.append(x[i, : lens[i]].astype(np.float32))
            if traj is not None:
                trajectories.append(traj[:, i, : lens[i]].astype(np.float32))
    return samples, trajectories
