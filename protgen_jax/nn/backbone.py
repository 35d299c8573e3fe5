"""`BackboneDenoiser`: a geometry-aware transformer that predicts the noise on C-alpha coordinates.

The network sees the noisy structure only through quantities that do not change when it is rotated or
translated, and builds its output from relative position vectors, so it is SE(3)-equivariant by
construction (rotating `x_t` rotates the prediction; translating it changes nothing):

    d_ij   = |x_i - x_j| * coord_scale                                  pairwise CA distances (Å)
    z_ij   = GELU(Dense(RBF(d_ij)) + Embed(clip(p_j - p_i, +-R)) + Dense(e_t))        [B, L, L, P]
    f_i    = [RBF(d_{i,i+k}), d_{i,i+k} / 10 for k = +-1, +-2, +-3;                   local geometry
              cos theta of the virtual bond angles at i-1, i, i+1;
              cos, sin of the virtual dihedrals of the windows starting at i-3 .. i]  (+ validity flags)
    h      = TransformerDenoiser(f, t, mask, attn_bias = Dense_H(z))                  [B, L, C]
    a_hij  = softmax_j(<q_hi, k_hj> / sqrt(c) + Dense_H'(z)_hij)                     (keys masked)
    eps_i  = sum_h g_hi (x_i - sum_j a_hij x_j) + sum_{k=+-1..+-K} w_ik (x_i - x_{i+k})
             g = Dense_H'(h),  w = Dense_2K(h) + s_t Dense_2K([h, f])                  [B, L, 3]
    eps    <- eps - masked mean(eps)                                                  (zero centre of mass)

Self-conditioning (`self_condition=True`; Chen et al. 2022, as in RFdiffusion and Genie): the previous
estimate x0_sc [B, L, 3] (zeros when there is none) enters through the same invariants, RBF(|x0_sc,i -
x0_sc,j|) added to z_ij and `local_geometry_features(x0_sc)` appended to f_i, so the network still sees
only invariants and stays equivariant.

`p` are chain positions (`cond`, default `arange(L)`): the relative-position embedding (clipped at
`max_relative_position`) tells bonded neighbours apart from residues across a chain break. The virtual
dihedrals change sign under a mirror reflection, so the network can prefer right-handed helices, which a
network fed with distances alone could not (distances are also reflection invariant).

The last layer is an attention over residues whose values are coordinates (as in EGNN's coordinate update,
Satorras et al. 2021, with attention weights instead of an MLP per edge): each head pulls residue `i`
towards (g < 0) or pushes it away from (g > 0) a learned weighted centroid of the others. A head that
attends only to `i + 1` gives `g (x_i - x_{i+1})`, which is how a bond length is corrected; a uniform head
with `g = 1` gives `x_i - mean(x)`, the noise of a pure-noise input. The local term does the first
directly for the chain neighbours (it needs no attention to find them), which is where the fine geometry
of a backbone lives. Its second part is scaled by the noise level s_t = sqrt(SNR_t) = sqrt(ab_t / (1 - ab_t)),
an input (`noise_level`; the schedule's side supplies it, `protgen_jax.diffusion.with_noise_level`): a
displacement x0_hat_i = x_t,i / sqrt(ab_t) - sum_k c_ik (x_i - x_{i+k}) that fixes bond lengths has
eps_i = sqrt(SNR_t) sum_k c_ik (x_i - x_{i+k}), with c_ik ~ (1 - 3.8 Å / d_ik) / 2 independent of the
noise level. Without the factor the network would have to learn c / sigma_t, a slope that grows to ~150
at the last steps; with it, small-noise denoising is a noise-independent function of local geometry.

Padding: inputs at padded residues are zeroed, every feature that touches a padded neighbour is flagged
invalid and zeroed, attention never reads padded keys and the output is zero there, so outputs at real
residues do not depend on how much padding follows them.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from protgen_jax.nn.embeddings import Dtype, timestep_embedding
from protgen_jax.nn.transformer import TransformerDenoiser

__all__ = ["BackboneDenoiser", "local_geometry_features", "pair_distances", "rbf"]

_NEG_INF = -1e9
_OFFSETS = (1, 2, 3)


def rbf(d: jax.Array, num: int, d_min: float, d_max: float) -> jax.Array:
    """Gaussian radial basis expansion: phi_k(d) = exp(-((d - mu_k) / s)^2), mu = linspace(min, max, num).

    s is the spacing of the centres, (d_max - d_min) / (num - 1).

    Args:
      d: [...] distances.
      num: number of centres K.
      d_min, d_max: first and last centre.

    Returns:
      [..., K] float32.
    """
    centres = jnp.linspace(d_min, d_max, num, dtype=jnp.float32).reshape((1,) * d.ndim + (num,))
    width = (d_max - d_min) / max(num - 1, 1)
    return jnp.exp(-jnp.square((d.astype(jnp.float32)[..., None] - centres) / width))


def pair_distances(x: jax.Array) -> jax.Array:
    """d_bij = sqrt(|x_bi - x_bj|^2 + 1e-10): [B, L, 3] -> [B, L, L] (the epsilon keeps gradients finite)."""
    chex.assert_rank(x, 3)
    diff = x[:, :, None, :] - x[:, None, :, :]
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + 1e-10)


def _shift(values: jax.Array, valid: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(values[:, i + k], valid[:, i + k]) along axis 1, out-of-range positions invalid and zero."""
    length = values.shape[1]
    index = jnp.arange(length) + k
    inside = (index >= 0) & (index < length)
    index = jnp.clip(index, 0, length - 1)
    shifted = jnp.take(values, index, axis=1)
    ok = jnp.take(valid, index, axis=1) & inside[None, :]
    ok_b = ok.reshape(ok.shape + (1,) * (shifted.ndim - ok.ndim))
    return jnp.where(ok_b, shifted, 0.0), ok


def _unit_cos_sin(y: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    norm = jnp.sqrt(jnp.square(x) + jnp.square(y) + 1e-12)
    return x / norm, y / norm


def local_geometry_features(
    x: jax.Array, mask: jax.Array, num_rbf: int = 16
) -> tuple[jax.Array, jax.Array]:
    """Rotation- and translation-invariant per-residue features of a CA trace (in Å).

    For k in (+-1, +-2, +-3): RBF_16(d_{i,i+k}) on [0, 20] Å and d_{i,i+k} / 10; cos theta_j of the
    virtual bond angles (j-1, j, j+1) for j = i-1, i, i+1; cos and sin of the virtual dihedrals
    (j, j+1, j+2, j+3) for j = i-3 .. i. Every feature whose residues are not all real is zero and flagged
    invalid by one extra 0/1 column.

    Args:
      x: [B, L, 3] coordinates in Å.
      mask: [B, L] bool.
      num_rbf: RBF centres per distance.

    Returns:
      ([B, L, F] float32 features, [B, L] bool validity of the bond to i + 1 (for tests)), with
      F = 6 (num_rbf + 2) + 3 * 2 + 4 * 3.
    """
    chex.assert_rank(x, 3)
    chex.assert_shape(mask, x.shape[:2])
    x = jnp.where(mask[..., None], x.astype(jnp.float32), 0.0)
    feats = []
    bond_valid = None
    for k in _OFFSETS:
        for sign in (1, -1):
            xk, ok = _shift(x, mask, sign * k)
            ok = ok & mask
            d = jnp.sqrt(jnp.sum(jnp.square(xk - x), axis=-1) + 1e-10)
            okf = ok.astype(jnp.float32)[..., None]
            feats += [rbf(d, num_rbf, 0.0, 20.0) * okf, jnp.minimum(d, 50.0)[..., None] / 10 * okf]
            feats.append(okf)
            if sign * k == 1:
                bond_valid = ok
    # Bond angle at residue j (between j-1, j, j+1), then shifted to i-1, i, i+1.
    prev, ok_prev = _shift(x, mask, -1)
    nxt, ok_next = _shift(x, mask, 1)
    u, v = prev - x, nxt - x
    cos_angle = jnp.sum(u * v, axis=-1) / jnp.sqrt(
        jnp.sum(u * u, axis=-1) * jnp.sum(v * v, axis=-1) + 1e-12
    )
    angle_ok = ok_prev & ok_next & mask
    cos_angle = jnp.where(angle_ok, cos_angle, 0.0)
    for k in (-1, 0, 1):
        value, ok = _shift(cos_angle, angle_ok, k)
        feats += [value[..., None], ok.astype(jnp.float32)[..., None]]
    # Dihedral of (j, j+1, j+2, j+3), then shifted so that windows j = i-3 .. i land on residue i.
    x1, ok1 = _shift(x, mask, 1)
    x2, ok2 = _shift(x, mask, 2)
    x3, ok3 = _shift(x, mask, 3)
    b1, b2, b3 = x1 - x, x2 - x1, x3 - x2
    n1, n2 = jnp.cross(b1, b2), jnp.cross(b2, b3)
    y = jnp.sqrt(jnp.sum(b2 * b2, axis=-1) + 1e-12) * jnp.sum(b1 * n2, axis=-1)
    cos_d, sin_d = _unit_cos_sin(y, jnp.sum(n1 * n2, axis=-1))
    dihedral_ok = mask & ok1 & ok2 & ok3
    dihedral = jnp.where(dihedral_ok[..., None], jnp.stack([cos_d, sin_d], axis=-1), 0.0)
    for k in (-3, -2, -1, 0):
        value, ok = _shift(dihedral, dihedral_ok, k)
        feats += [value, ok.astype(jnp.float32)[..., None]]
    out = jnp.concatenate(feats, axis=-1) * mask[..., None].astype(jnp.float32)
    return out, bond_valid


class BackboneDenoiser(nn.Module):
    """SE(3)-equivariant noise predictor for C-alpha coordinates (see the module docstring).

    Attributes:
      num_layers, num_heads, model_dim, mlp_ratio: the transformer trunk (`TransformerDenoiser`).
      pair_dim: width `P` of the pair features z_ij.
      num_rbf: RBF centres for distances (pairs: [0, max_distance] Å; local: [0, 20] Å).
      max_distance: last pair RBF centre in Å.
      max_relative_position: relative chain positions are clipped to [-R, R].
      output_heads: heads `H'` of the equivariant output attention.
      local_neighbours: K of the local output term (0 = none).
      coord_scale: Å per model unit (the data's `COORD_SCALE`); features are computed in Å.
      self_condition: take the previous x0 estimate (`self_cond`) as an input.
      dtype, param_dtype: compute and parameter dtypes (geometry and the output stay float32).
    """

    num_layers: int = 4
    num_heads: int = 8
    model_dim: int = 128
    mlp_ratio: float = 4.0
    pair_dim: int = 32
    num_rbf: int = 16
    max_distance: float = 24.0
    max_relative_position: int = 32
    output_heads: int = 16
    local_neighbours: int = 3
    coord_scale: float = 10.0
    self_condition: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_t: jax.Array,
        t: jax.Array,
        mask: jax.Array | None = None,
        cond: jax.Array | None = None,
        *,
        noise_level: jax.Array | None = None,
        self_cond: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Predict the noise eps in x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps.

        Args:
          x_t: [B, L, 3] noisy coordinates in model units (Å / coord_scale).
          t: [B] integer timesteps.
          mask: [B, L] bool, True at real residues (None = all real).
          cond: [B, L] int chain positions p (None = arange(L)); only differences matter.
          noise_level: [B] float s_t = sqrt(ab_t / (1 - ab_t)) of the schedule at `t`, the factor of the
            local x0 term (None = ones); `protgen_jax.diffusion.with_noise_level` supplies it.
          self_cond: [B, L, 3] previous x0 estimate in model units (None = zeros); used only when
            `self_condition` (the samplers' and `diffusion_loss`'s `self_condition` supply it).
          deterministic: disables dropout in the trunk.

        Returns:
          [B, L, 3] float32, zero at padded residues, with zero masked mean per example.
        """
        chex.assert_rank(x_t, 3)
        batch, length, _ = x_t.shape
        chex.assert_shape(x_t, (batch, length, 3))
        chex.assert_shape(t, (batch,))
        if mask is None:
            mask = jnp.ones((batch, length), bool)
        chex.assert_shape(mask, (batch, length))
        mask = mask.astype(bool)
        if cond is None:
            cond = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        chex.assert_shape(cond, (batch, length))
        if noise_level is None:
            noise_level = jnp.ones((batch,), jnp.float32)
        chex.assert_shape(noise_level, (batch,))
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x = jnp.where(mask[..., None], x_t.astype(jnp.float32), 0.0)
        x_angstrom = x * self.coord_scale

        e = timestep_embedding(t, self.pair_dim)
        e = nn.Dense(self.pair_dim, name="pair_time", **kw)(e)
        offset = jnp.clip(
            cond[:, None, :] - cond[:, :, None],
            -self.max_relative_position,
            self.max_relative_position,
        )
        z = nn.Dense(self.pair_dim, name="pair_rbf", **kw)(
            rbf(pair_distances(x_angstrom), self.num_rbf, 0.0, self.max_distance)
        )
        z = z + nn.Embed(2 * self.max_relative_position + 1, self.pair_dim, name="relpos", **kw)(
            offset + self.max_relative_position
        )
        features, _ = local_geometry_features(x_angstrom, mask, self.num_rbf)
        if self.self_condition:
            sc = jnp.zeros_like(x) if self_cond is None else self_cond.astype(jnp.float32)
            chex.assert_shape(sc, x.shape)
            sc = jnp.where(mask[..., None], sc, 0.0) * self.coord_scale
            z = z + nn.Dense(self.pair_dim, name="pair_self_cond", **kw)(
                rbf(pair_distances(sc), self.num_rbf, 0.0, self.max_distance)
            )
            features = jnp.concatenate(
                [features, local_geometry_features(sc, mask, self.num_rbf)[0]], axis=-1
            )
        z = nn.gelu(z + e[:, None, None, :])
        trunk_bias = jnp.moveaxis(nn.Dense(self.num_heads, name="trunk_bias", **kw)(z), -1, 1)
        head_bias = jnp.moveaxis(nn.Dense(self.output_heads, name="head_bias", **kw)(z), -1, 1)

        h = TransformerDenoiser(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            model_dim=self.model_dim,
            mlp_ratio=self.mlp_ratio,
            out_dim=self.model_dim,
            name="trunk",
            **kw,
        )(features, t, mask, None, attn_bias=trunk_bias, deterministic=deterministic)
        return self._equivariant_head(h, features, x, noise_level, mask, head_bias)

    def _equivariant_head(
        self,
        h: jax.Array,
        features: jax.Array,
        x: jax.Array,
        noise_level: jax.Array,
        mask: jax.Array,
        bias: jax.Array,
    ) -> jax.Array:
        """eps_i = sum_h g_hi (x_i - sum_j a_hij x_j) + local term, zero masked mean: [B, L, 3] f32."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = self.output_heads
        head_dim = max(self.model_dim // heads, 8)
        q = nn.DenseGeneral((heads, head_dim), name="head_query", **kw)(h)
        k = nn.DenseGeneral((heads, head_dim), name="head_key", **kw)(h)
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits / jnp.sqrt(jnp.float32(head_dim)) + bias.astype(jnp.float32)
        logits = jnp.where(mask[:, None, None, :], logits, _NEG_INF)
        weights = jax.nn.softmax(logits, axis=-1)
        centroid = jnp.einsum("bhqk,bkd->bqhd", weights, x)
        gain = nn.Dense(
            heads,
            kernel_init=nn.initializers.zeros_init(),
            name="head_gain",
            param_dtype=self.param_dtype,
        )(h.astype(jnp.float32))
        eps = jnp.einsum("bqh,bqhd->bqd", gain, x[:, :, None, :] - centroid)
        if self.local_neighbours > 0:
            offsets = [s * k for k in range(1, self.local_neighbours + 1) for s in (1, -1)]
            local_gain = nn.Dense(
                len(offsets),
                kernel_init=nn.initializers.zeros_init(),
                name="local_gain",
                param_dtype=self.param_dtype,
            )(h.astype(jnp.float32))
            shift = nn.Dense(
                len(offsets),
                kernel_init=nn.initializers.zeros_init(),
                name="local_x0_gain",
                param_dtype=self.param_dtype,
            )(jnp.concatenate([h.astype(jnp.float32), features], axis=-1))
            local_gain = local_gain + noise_level.astype(jnp.float32)[:, None, None] * shift
            for i, k in enumerate(offsets):
                neighbour, ok = _shift(x, mask, k)
                eps = eps + (local_gain[..., i] * ok)[..., None] * (x - neighbour)
        maskf = mask[..., None].astype(jnp.float32)
        count = jnp.maximum(jnp.sum(maskf, axis=1, keepdims=True), 1.0)
        eps = eps * maskf
        return (eps - jnp.sum(eps, axis=1, keepdims=True) / count) * maskf
