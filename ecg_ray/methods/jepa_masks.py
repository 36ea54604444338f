"""ECG-JEPA's multi-block masks over time: a few long masked blocks, the context is what is left.

Weimann & Conrad (2024; github.com/kweimann/ECG-JEPA, data/masks.py, configs/pretrain/ViT*_all.yaml)
mask patches in blocks over time (all leads of a patch together): per batch a keep ratio is drawn
from U(0.15, 0.25), so 75-85 % of the patches are masked, in contiguous blocks of at least 10
patches (0.5 s at 50 ms patches); the encoder sees the kept patches, the predictor predicts all
masked ones. Their sampler places blocks one by one in Python per sample (in the data loader's
workers). Ours draws the same kind of mask for the whole batch at once on the batch's device:

* per batch (one draw, shared by every row, so indices are rectangular tensors): the kept count
  ``K = ceil(r N)``, r ~ U(min_keep, max_keep), and the number of masked blocks k, uniform over
  1..min(M // min_block, K + 1) with M = N - K masked patches;
* per row: the block lengths, min_block plus a uniformly random split of the rest of M into k
  parts, and the kept gaps around them (inner gaps >= 1 patch, the two ends >= 0), a uniformly
  random split of K.

So every row masks exactly M patches in k blocks of >= min_block patches (one block of M when
M < min_block), which are separated by kept patches. The scalar draws (r, k) come from a CPU
generator seeded per step (no device-to-host sync); the per-row draws from the method's
device generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockMasks:
    """Patch indices of one batch: ``context`` (B, K) kept patches, ``target`` (B, M) masked ones, each sorted."""

    context: Tensor
    target: Tensor
    #: masked blocks per row
    blocks: int


def random_composition(total: int, parts: int, rows: int, generator: torch.Generator | None,
                       device: torch.device) -> Tensor:
    """(rows, parts) non-negative integers summing to ``total``, uniform over all such splits (stars and bars)."""
    if parts == 1:
        return torch.full((rows, 1), total, dtype=torch.int64, device=device)
    slots = total + parts - 1
    scores = torch.rand(rows, slots, generator=generator, device=device)
    bars = scores.argsort(dim=1)[:, :parts - 1].sort(dim=1).values  # parts - 1 distinct bar positions
    edges = torch.cat([torch.full((rows, 1), -1, device=device), bars,
                       torch.full((rows, 1), slots, device=device)], dim=1)
    return edges.diff(dim=1) - 1


def block_counts(num_patches: int, keep_ratio: float, min_block: int) -> tuple[int, int, int]:
    """(kept K, masked M, most blocks) for ``num_patches`` patches and a drawn keep ratio."""
    keep = min(num_patches - 1, max(1, math.ceil(keep_ratio * num_patches)))
    masked = num_patches - keep
    return keep, masked, max(1, min(masked // min_block, keep + 1))


def sample_block_masks(batch: int, num_patches: int, *, min_keep: float, max_keep: float, min_block: int,
                       scalar_generator: torch.Generator, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> BlockMasks:
    """Multi-block masks for ``batch`` rows of ``num_patches`` patches (see the module docstring)."""
    if num_patches < 2:
        raise ValueError(f"JEPA masking needs at least 2 patches per crop, got {num_patches}")
    device = torch.device(device)
    ratio = min_keep + (max_keep - min_keep) * float(torch.rand((), generator=scalar_generator))
    keep, masked, most = block_counts(num_patches, ratio, min_block)
    blocks = int(torch.randint(1, most + 1, (), generator=scalar_generator))
    floor = min(min_block, masked // blocks)  # one block shorter than min_block when M < min_block
    lengths = floor + random_composition(masked - blocks * floor, blocks, batch, generator, device)
    gaps = random_composition(keep - (blocks - 1), blocks + 1, batch, generator, device)
    gaps[:, 1:-1] += 1  # kept patches between two blocks: they stay separate blocks
    # Block i starts after the gaps 0..i and the blocks 0..i-1.
    starts = gaps[:, :-1].cumsum(1) + torch.cat([torch.zeros_like(lengths[:, :1]), lengths[:, :-1].cumsum(1)], 1)
    position = torch.arange(num_patches, device=device)
    inside = (position >= starts.unsqueeze(-1)) & (position < (starts + lengths).unsqueeze(-1))  # (B, k, N)
    is_masked = inside.any(dim=1)
    # Each row has exactly ``masked`` True: a stable sort puts kept then masked indices, each ascending.
    order = is_masked.to(torch.int8).argsort(dim=1, stable=True)
    return BlockMasks(context=order[:, :keep], target=order[:, keep:], blocks=blocks)
