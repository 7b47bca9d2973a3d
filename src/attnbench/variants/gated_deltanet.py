"""Gated DeltaNet: the delta rule with a data-dependent scalar decay per head.

Yang, Kautz & Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule"
(ICLR 2025).

The recurrence (per head, S ∈ R^{d_v × d_k}; the code stores M = Sᵀ as in
:mod:`attnbench.variants.deltanet`):

    S_t = α_t S_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ,      o_t = S_t q_t

α_t ∈ (0, 1) forgets the whole state (Mamba2's gate), β_t edits the value stored under
k_t (DeltaNet's delta rule); α ≡ 1 is DeltaNet. The decay is parametrised as in Mamba2 and
the paper's released layer:

    log α_t = −exp(A_log) · softplus(x_t w_α + b_dt)       (one scalar per head)

with learned per-head A_log (A = exp(A_log) initialised uniform in (0, 16)) and b_dt
(initialised so that softplus(b_dt) is log-uniform in [0.001, 0.1], Mamba2's Δ range).

Training uses the chunkwise WY form with cumulative in-chunk log-decays,
:func:`attnbench.variants.deltanet.chunk_delta_rule` with ``log_alpha``: the derivation
and the formulas are in that module's docstring (exp(G_r − G_i) decay ratios inside a
chunk, γ_c across chunks). :func:`~attnbench.variants.deltanet.recurrent_delta_rule` is
the definition and the tests' oracle.

The layer is DeltaNet's (:class:`~attnbench.variants.deltanet.DeltaNet`: projections,
short causal convolution of kernel 4 with SiLU on q, k, v, L2-normalised q and k,
β_t = σ(x_t W_β + b_β), RMSNorm per head) plus the decay α_t and, as in the paper, the
output gate: o ← RMSNorm(o) ⊙ SiLU(x W_g) (option ``output_gate``, on by default).
At padded positions β = 0 and α = 1, so they leave the state unchanged.

Left out: the value expansion of the released layer (``expand_v`` = 2, d_v = 2 d_k) —
every variant here has d_v = d_k = head_dim, so parameter and state budgets stay
comparable; the hybrid models (Gated DeltaNet-H1/H2 with sliding-window attention or
Mamba2 layers); the SwiGLU channel mixer; the negative-eigenvalue extension (β ∈ (0, 2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import AttentionDims, register_variant
from attnbench.variants.deltanet import DeltaNet, DeltaNetOptions

A_INIT_RANGE = (0.0, 16.0)  # A = exp(A_log) ~ U(0, 16)
DT_INIT_RANGE = (1e-3, 1e-1)  # softplus(b_dt) log-uniform in this range
DT_FLOOR = 1e-4


@dataclass
class GatedDeltaNetOptions(DeltaNetOptions):
    output_gate: bool = True  # RMSNorm(o) ⊙ SiLU(x W_g), as in the paper


@register_variant(
    "gated-deltanet",
    paper=(
        'Yang, Kautz & Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with Delta Rule"'
    ),
    summary="delta rule with a data-dependent decay α_t per head; chunkwise WY form",
)
class GatedDeltaNet(DeltaNet):
    """S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, α_t = exp(−A·softplus(x w_α + b))."""

    Options = GatedDeltaNetOptions
    # per-head decay rate and Δ bias: structural (1-D anyway, named for clarity)
    decay_exempt = ("A_log", "dt_bias")

    def __init__(self, dims: AttentionDims, options: GatedDeltaNetOptions | None = None) -> None:
        super().__init__(dims, options)
        h = dims.n_heads
        self.a_proj = nn.Linear(dims.d_model, h, bias=False)  # x_t w_α
        a = torch.empty(h).uniform_(*A_INIT_RANGE)
        self.A_log = nn.Parameter(torch.log(a))
        lo, hi = DT_INIT_RANGE
        dt = torch.exp(torch.rand(h) * (math.log(hi) - math.log(lo)) + math.log(lo))
        dt = dt.clamp_min(DT_FLOOR)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def input_maps(self) -> list[tuple[Tensor, Tensor]]:
        """DeltaNet's maps, then x w_α + b_dt (the decay's logits)."""
        return [*super().input_maps(), (self.a_proj.weight, self.dt_bias)]

    def log_decay(self, maps: list[Tensor]) -> Tensor:
        """log α_t = −exp(A_log) · softplus(x_t w_α + b_dt): (B, T, H), all ≤ 0."""
        (logits,) = maps
        work = torch.promote_types(logits.dtype, torch.float32)
        return -self.A_log.to(work).exp() * F.softplus(logits.to(work))
