"""A 1-D patch transformer (ViT) for 12-lead ECG, sized as ECG-JEPA's encoders (Weimann & Conrad 2024).

Patches run over time ACROSS the 12 leads: one token per ``patch_size`` samples of all leads
(a Conv1d with kernel = stride = patch_size), as in Weimann & Conrad's ECG-JEPA
(github.com/kweimann/ECG-JEPA, models/modules.py PatchEmbedding). We follow that paper rather
than per-lead tokens (Kim 2024's ECG-JEPA with CroPA): 12x fewer tokens for the same crop, so
attention costs 144x less, and the published configuration whose results the issue cites.

Their patch is 25 samples at 500 Hz (50 ms); our stores are 100 Hz, so 50 ms is 5 samples, and a
10 s crop gives their 200 tokens. Fixed 1-D sin-cos position embeddings (computed for the crop at
hand, so the encoder pretrained on 10 s crops also reads the evaluation's 2.5 s windows), one
learned register token (prepended, dropped from the output), pre-LN blocks without biases,
attention through ``torch.nn.functional.scaled_dot_product_attention``, a final LayerNorm.

``forward`` pools by the mean over patch tokens: Weimann & Conrad's global-average option (their
best linear figures use a trained attentive pooler, which is not a linear probe of fixed
features). :meth:`ViT1d.tokens` gives per-patch embeddings, optionally of a subset of patches
(``keep``): JEPA's context encoder reads only the visible patches.

Sizes (their configs/pretrain/ViT*_all.yaml): ``vit1d_xs`` = ViT-XS (dim 192, depth 8, 4 heads,
~3.6 M parameters), ``vit1d_s`` = ViT-S (dim 384, depth 8, 6 heads, ~14.3 M).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecg_ray.models.registry import Encoder, register_encoder

#: 50 ms at our stores' 100 Hz: Weimann & Conrad's 25 samples at 500 Hz
PATCH_SIZE = 5


def sincos_positions(n: int, dim: int, device=None, dtype=torch.float32) -> Tensor:
    """(n, dim) fixed 1-D sin-cos position embeddings: even channels sin, odd channels cos."""
    if dim % 2:
        raise ValueError(f"sin-cos position embeddings need an even width, got {dim}")
    position = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.empty(n, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.to(dtype)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` (B, K) of each sequence of ``x`` (B, N, D) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    """Multi-head self-attention through PyTorch's fused scaled-dot-product kernel."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)  # no qkv bias, as the reference
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (GELU, hidden = mlp_ratio x dim)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, bias: bool = False, eps: float = 1e-6):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.attn = Attention(dim, heads, bias=bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, dim, bias=bias))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_transformer(module: nn.Module, depth: int) -> None:
    """The reference's initialisation: truncated normal (std 0.02) for linear and conv weights, the
    residual projections (attention out, MLP out) scaled by 1 / sqrt(2 depth), zero biases, unit norms."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear | nn.Conv1d):
            residual = name.endswith("attn.proj") or name.endswith("mlp.2")
            nn.init.trunc_normal_(sub.weight, std=0.02 / math.sqrt(2 * depth) if residual else 0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


class PatchEmbedding(nn.Module):
    """(B, C, T) -> (B, ceil(T / patch), dim) patch tokens, plus the learned register tokens."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, registers: int, bias: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv1d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.registers = nn.Parameter(torch.zeros(1, registers, dim))
        nn.init.trunc_normal_(self.registers, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        tail = -x.shape[-1] % self.patch_size
        if tail:  # a last, partial patch is zero-padded: T' = ceil(T / patch), the Encoder contract
            x = F.pad(x, (0, tail))
        return self.proj(x).transpose(1, 2)


class ViT1d(Encoder):
    """1-D ViT over patches of all leads: ``forward`` (B, C, T) -> (B, dim), the mean patch embedding."""

    output = "pooled"
    finetune_head = "linear"

    def __init__(self, in_channels: int = 12, dim: int = 192, depth: int = 8, heads: int = 4,
                 patch_size: int = PATCH_SIZE, mlp_ratio: float = 4.0, registers: int = 1, bias: bool = False,
                 eps: float = 1e-6):
        super().__init__()
        # Registered as "embed" (state-dict keys embed.*, as every saved ViT checkpoint has them) but read
        # through patch_embedding: the name embed is Encoder.embed, the portable API on raw signals.
        # (nn.Module.__setattr__ registers it; add_module would refuse the name the class already uses)
        self.embed = PatchEmbedding(in_channels, dim, patch_size, registers, bias=bias)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, bias, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps, bias=bias)
        self.dim, self.depth, self.heads, self.registers = dim, depth, heads, registers
        self.feature_dim = dim
        self.downsample = patch_size
        init_transformer(self, depth)
        nn.init.trunc_normal_(self.patch_embedding.registers, std=0.02)

    @property
    def patch_embedding(self) -> PatchEmbedding:
        """The patch embedding layer (the submodule registered as ``embed``)."""
        return self._modules["embed"]

    def parameter_groups(self) -> list[nn.Module]:
        """Head down: the final norm with the last block, the other blocks from the top, the patch embedding."""
        top = nn.ModuleList([self.norm, self.blocks[-1]])
        return [top, *reversed(self.blocks[:-1]), self.patch_embedding]

    def num_patches(self, length: int) -> int:
        return math.ceil(length / self.downsample)

    def tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """(B, C, T) -> (B, N, dim) final-normed patch embeddings; with ``keep`` (B, K) patch indices,
        only those patches enter the transformer and (B, K, dim) comes back, in ``keep``'s order."""
        patches = self.patch_embedding(x)
        patches = patches + sincos_positions(patches.shape[1], self.dim, patches.device, patches.dtype)
        if keep is not None:
            patches = gather_tokens(patches, keep)
        h = torch.cat([self.patch_embedding.registers.expand(patches.shape[0], -1, -1).to(patches.dtype), patches], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.norm(h)[:, self.registers:]

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, dim, ceil(T / patch_size)) per-patch features."""
        return self.tokens(x).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.tokens(x).mean(dim=1)


@register_encoder("vit1d_xs")
def vit1d_xs(in_channels: int = 12, **kwargs) -> ViT1d:
    """ECG-JEPA's ViT-XS (Weimann & Conrad 2024): dim 192, depth 8, 4 heads, 50 ms patches (~3.6 M parameters)."""
    return ViT1d(in_channels, **{"dim": 192, "depth": 8, "heads": 4, **kwargs})


@register_encoder("vit1d_s")
def vit1d_s(in_channels: int = 12, **kwargs) -> ViT1d:
    """ECG-JEPA's ViT-S (Weimann & Conrad 2024): dim 384, depth 8, 6 heads, 50 ms patches (~14.3 M parameters)."""
    return ViT1d(in_channels, **{"dim": 384, "depth": 8, "heads": 6, **kwargs})
