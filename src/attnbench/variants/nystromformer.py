"""Nyströmformer: softmax attention through m landmarks and a pseudo-inverse.

Xiong, Zeng, Chakraborty, Tan, Fung, Li and Singh, "Nyströmformer: A Nyström-Based
Algorithm for Approximating Self-Attention", AAAI 2021:

    Ŝ V = softmax(Q K̃ᵀ/√d) · A⁺ · softmax(Q̃ Kᵀ/√d) · V,    A = softmax(Q̃ K̃ᵀ/√d)

where the m landmarks Q̃, K̃ are segment means of Q and K (m contiguous segments of
the sequence) and A⁺ is the Moore–Penrose pseudo-inverse of the (m × m) kernel,
approximated by the paper's iteration (Razavi et al. 2014)

    Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞),   Z_{j+1} = ¼ Z_j (13I − A Z_j (15I − A Z_j (7I − A Z_j))).

Evaluated right to left the cost is O(n·m·d + m³): no (n × n) matrix. An optional
depthwise convolution of V along the length (one kernel per head, as in the
authors' code) is added to the output; it is off by default so that the variant is
the Nyström approximation alone (``nystrom-16-conv`` turns it on with the authors'
LRA kernel size, 35).

Segments and masks: the real tokens of each sequence are split, in order, into m
segments of as-equal-as-possible size (token of rank r among L real tokens goes to
segment ⌊r·m/L⌋), so a length not divisible by m needs no padding tokens, padded
tokens are in no landmark, and a sequence gives the same output alone or in a padded
batch. With L < m each real token is its own landmark and the remaining landmarks
are empty; empty landmarks are masked out of every softmax (and their rows of A are
zero, which the pseudo-inverse keeps zero), padded keys are masked out of
softmax(Q̃ Kᵀ). With m ≥ L the result is exact softmax attention (A A⁺ A = A).
The pseudo-inverse is computed in float32 (also under autocast). Attention dropout
is not applied. Self-attention only, non-causal (every landmark mixes the sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    masked_softmax,
    register_preset,
    register_variant,
)


@dataclass
class NystromOptions:
    landmarks: int = 16  # m; 16 suits lengths ≈ 100 (≈ 6 tokens per landmark)
    pinv_iterations: int = 6  # iterations of the pseudo-inverse (the paper's 6)
    exact_pinv: bool = False  # torch.linalg.pinv (SVD) instead of the iteration, for analysis
    conv_kernel: int = 0  # depthwise-conv skip on V along the length; 0 = off, else odd

    def __post_init__(self) -> None:
        if self.landmarks < 1:
            raise ValueError(f"landmarks must be positive, got {self.landmarks}")
        if self.pinv_iterations < 0:
            raise ValueError(f"pinv_iterations must be >= 0, got {self.pinv_iterations}")
        if self.conv_kernel < 0 or (self.conv_kernel and self.conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be 0 or odd, got {self.conv_kernel}")


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore–Penrose pseudo-inverse of each (m × m) matrix of ``a`` by the paper's iteration."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1)  # max column sum  (...)
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # max row sum  (...)
    scale = (norm_1 * norm_inf).clamp_min(torch.finfo(a.dtype).tiny)
    z = a.transpose(-2, -1) / scale[..., None, None]  # Z₀ = Aᵀ / (‖A‖₁‖A‖∞)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def segment_means(real: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Averaging matrix of the m landmark segments and which segments are non-empty.

    real: (B, n) bool, True = a real token. Returns ``means`` (B, m, n) with
    ``means @ x`` the segment means of x, and ``valid`` (B, m) bool.
    """
    length = real.sum(dim=-1, keepdim=True)  # (B, 1)
    rank = real.cumsum(dim=-1) - 1  # rank of each real token  (B, n)
    segment = torch.div(rank * m, length.clamp_min(1), rounding_mode="floor")  # (B, n)
    ids = torch.arange(m, device=real.device)
    member = (segment[:, None, :] == ids[None, :, None]) & real[:, None, :]  # (B, m, n)
    counts = member.sum(dim=-1)  # (B, m)
    means = member.to(torch.float32) / counts.clamp_min(1)[..., None]
    return means, counts > 0


@register_variant(
    "nystromformer",
    paper=(
        'Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for '
        'Approximating Self-Attention"'
    ),
    summary="softmax(QK̃ᵀ)·pinv(softmax(Q̃K̃ᵀ))·softmax(Q̃Kᵀ)·V, m landmarks",
)
class Nystromformer(MultiHeadAttention):
    """Nyström approximation of softmax attention with segment-mean landmarks."""

    Options = NystromOptions
    capabilities = Capabilities(
        causal=False,
        cross_attention=False,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n·m·d + m³)",
        memory_complexity="O(n·m)",
    )

    def __init__(self, dims: AttentionDims, options: NystromOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: NystromOptions
        kernel = self.options.conv_kernel
        self.conv = (
            nn.Conv2d(
                dims.n_heads,
                dims.n_heads,
                (kernel, 1),
                padding=(kernel // 2, 0),
                groups=dims.n_heads,
                bias=False,
            )
            if kernel
            else None
        )

    @classmethod
    def dense_reason(cls, options: NystromOptions, n: int) -> str | None:
        """m ≥ n: every token is its own landmark and the Nyström product is softmax
        attention (exactly with ``exact_pinv``; to the iteration's accuracy otherwise)."""
        m = options.landmarks
        if m < n:
            return None
        how = f"landmarks m = {m} ≥ n = {n}: every token is its own landmark"
        if options.conv_kernel:
            how += f" (plus the depthwise-conv skip, kernel {options.conv_kernel})"
        return how

    def pinv(self, a: Tensor) -> Tensor:
        dtype = a.dtype
        with torch.autocast(device_type=a.device.type, enabled=False):
            a = a.to(torch.promote_types(dtype, torch.float32))
            if self.options.exact_pinv:
                return torch.linalg.pinv(a).to(dtype)
            return iterative_pinv(a, self.options.pinv_iterations).to(dtype)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        if ctx.mask.causal:
            raise ValueError("nystromformer cannot mask the future (capabilities: causal=False)")
        b, _, t, dh = q.shape
        if k.shape[-2] != t:
            raise ValueError("nystromformer is self-attention only (capabilities: cross=False)")
        pad = ctx.mask.key_padding
        real = (
            torch.ones(b, t, dtype=torch.bool, device=q.device)
            if pad is None
            else pad.to(device=q.device, dtype=torch.bool)
        )  # (B, n): queries and keys share the padding in self-attention
        means, valid = segment_means(real, self.options.landmarks)  # (B, m, n), (B, m)
        means = means.to(q.dtype)[:, None]  # (B, 1, m, n)
        q_land, k_land = means @ q, means @ k  # Q̃, K̃  (B, H, m, dh)
        scale = default_scale(dh)
        land = valid[:, None, None, :]  # (B, 1, 1, m)
        land_rows = valid[:, None, :, None].to(q.dtype)  # (B, 1, m, 1)
        kernel_1 = masked_softmax((q @ k_land.transpose(-2, -1)) * scale, land)  # (B, H, n, m)
        kernel_2 = masked_softmax((q_land @ k_land.transpose(-2, -1)) * scale, land)  # (B,H,m,m)
        kernel_2 = kernel_2 * land_rows  # empty landmarks: zero rows and columns
        keys = real[:, None, None, :]  # (B, 1, 1, n)
        kernel_3 = masked_softmax((q_land @ k.transpose(-2, -1)) * scale, keys) * land_rows
        a_pinv = self.pinv(kernel_2)  # (B, H, m, m)
        out = kernel_1 @ (a_pinv @ (kernel_3 @ v))  # (B, H, n, dh)
        if self.conv is not None:  # depthwise conv of V along the length, padding zeroed
            out = out + self.conv(v.masked_fill(~real[:, None, :, None], 0.0))
        weights = kernel_1 @ a_pinv @ kernel_3 if ctx.need_weights else None  # (B, H, n, n)
        return out, weights


register_preset("nystrom-32", "nystromformer", landmarks=32, summary="Nyströmformer, m = 32")
register_preset(
    "nystrom-16-conv",
    "nystromformer",
    landmarks=16,
    conv_kernel=35,
    summary="Nyströmformer, m = 16, depthwise-conv skip on V (kernel 35)",
)
