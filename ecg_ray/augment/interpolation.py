"""Reading a batch at fractional time positions: the one gather + lerp behind every time warp."""

from __future__ import annotations

import torch


def _resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` (B, C, T) at per-sample source positions ``pos`` (B, T_out).

    All leads of a sample share the positions. ``torch.lerp`` is exact at weights 0 and 1, so
    integer positions reproduce the input bit for bit (identity crops stay identities).
    """
    t = x.shape[-1]
    pos = pos.clamp(0, t - 1)
    # clamp to t-2 so that i0 + 1 is always valid; position t-1 then becomes i0=t-2 with weight 1
    i0 = pos.floor().long().clamp(max=max(t - 2, 0))
    return _lerp_at(x, i0, pos - i0)


def _lerp_at(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(1 - weight) * x[..., index] + weight * x[..., index + 1]``; index, weight (B, T_out).

    For callers that know the integer sample and the weight separately: going through a float32
    position ``index + weight`` would cost the weight ~1e-5 of precision near index 250.
    ``index + 1`` past the end is clamped, which is harmless where the weight there is 0.
    """
    b, c, t = x.shape
    idx = index[:, None, :].expand(b, c, index.shape[-1])
    left = x.gather(-1, idx)
    right = x.gather(-1, (idx + 1).clamp(max=t - 1))
    return torch.lerp(left, right, weight.to(x.dtype)[:, None, :])
