"""1-D xresnet ("bag of tricks" ResNet) encoders for 12-lead ECG.

Follows the fastai-style xresnet1d used by the reference code of Mehari & Strodthoff (2022):
a 3-conv stem, max-pool, four stages of bottleneck blocks with kernel 5, AvgPool+1x1-conv
shortcuts and zero-initialised last BN per block, then concat(max, avg) pooling.

Two width schedules are offered:

* reference width (``xresnet1d50``, ``xresnet1d101``): every stage has bottleneck width 64 and
  256 output channels, giving 512-d features and ~0.886 M parameters for [3, 4, 6, 3]. These
  are the defaults so results compare with the paper.
* standard width (``xresnet1d50_standard``, ``xresnet1d101_standard``): the ImageNet-style
  64/128/256/512 bottleneck widths, giving 2048 output channels, i.e. 4096-d features with the
  same concat pooling (pass ``concat_pool=False`` for 2048-d average-pooled features).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ecg_ray.models.registry import Encoder, register_encoder

REFERENCE_WIDTHS = (64, 64, 64, 64)
STANDARD_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
STEM_CHANNELS = (32, 32, 64)


def conv_bn(
    ni: int, nf: int, kernel_size: int, stride: int = 1, act: bool = True, zero_bn: bool = False
) -> nn.Sequential:
    """Conv1d(bias=False) + BN (+ ReLU); the conv has no bias because the BN that follows has one."""
    bn = nn.BatchNorm1d(nf)
    # Zeroing the last BN of a residual branch makes every block start as (activated) identity,
    # which is the "bag of tricks" initialisation that lets deep stacks train from step one.
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    nn.init.zeros_(bn.bias)
    layers: list[nn.Module] = [
        nn.Conv1d(ni, nf, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False),
        bn,
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck1d(nn.Module):
    """Bottleneck residual block: 1x1 reduce, k-conv (carries the stride), 1x1 expand.

    The shortcut average-pools first when strided (so no information is skipped as a strided
    1x1 conv would) and only uses a 1x1 conv + BN when the channel count changes.
    """

    def __init__(self, ni: int, width: int, nf: int, stride: int = 1, kernel_size: int = 5):
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn(ni, width, 1),
            conv_bn(width, width, kernel_size, stride=stride),
            conv_bn(width, nf, 1, act=False, zero_bn=True),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            # ceil_mode keeps the shortcut length equal to the strided conv's ceil(T / 2).
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if ni != nf:
            shortcut.append(conv_bn(ni, nf, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)  # empty Sequential == identity
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class AdaptiveConcatPool1d(nn.Module):
    """Global max and average pooling over time, concatenated -> (B, 2C)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.amax(dim=-1), x.mean(dim=-1)], dim=1)


class AdaptiveAvgPool1dFlat(nn.Module):
    """Global average pooling over time -> (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=-1)


class XResNet1d(Encoder):
    """xresnet1d encoder: ``forward`` (B, C_in, T) -> (B, feature_dim) pooled window features."""

    #: what the encoder gives methods: pooled (B, feature_dim) features (see ecg_ray.models.registry)
    output = "pooled"
    finetune_head = "linear"

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = REFERENCE_WIDTHS,
        in_channels: int = 12,
        expansion: int = EXPANSION,
        kernel_size: int = 5,
        kernel_size_stem: int = 5,
        stem_channels: Sequence[int] = STEM_CHANNELS,
        concat_pool: bool = True,
    ):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {list(layers)} and widths {list(widths)} must have the same length")
        stem_szs = [in_channels, *stem_channels]
        stem = [
            conv_bn(stem_szs[i], stem_szs[i + 1], kernel_size_stem, stride=2 if i == 0 else 1)
            for i in range(len(stem_channels))
        ]
        self.stem = nn.Sequential(*stem, nn.MaxPool1d(kernel_size=3, stride=2, padding=1))

        stages = []
        ni = stem_szs[-1]
        for i, (n_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            nf = width * expansion
            blocks = []
            for b in range(n_blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(Bottleneck1d(ni, width, nf, stride=stride, kernel_size=kernel_size))
                ni = nf
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # concat(max, avg) as in the reference; avg-only is offered for a ResNet-style 1x feature width
        self.pool = AdaptiveConcatPool1d() if concat_pool else AdaptiveAvgPool1dFlat()

        self.out_channels = ni
        self.feature_dim = 2 * ni if concat_pool else ni
        # stem conv stride 2, max-pool 2, one stride 2 per stage after the first
        self.downsample = 2 * 2 * 2 ** (len(layers) - 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # Kaiming (fan_in, ReLU) for convs as fastai's init_cnn; BN weights were set in conv_bn.
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def parameter_groups(self) -> list[nn.Module]:
        """Layer groups from the head down (discriminative learning rates): each stage, last first, then the stem."""
        return [*reversed(self.stages), self.stem]

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, out_channels, ceil(T / downsample)) per-time-step features."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.forward_features(x))


@register_encoder("xresnet1d50")
def xresnet1d50(in_channels: int = 12, **kwargs) -> XResNet1d:
    """Reference-width xresnet1d50 (the paper's encoder): 512-d features, ~0.886 M params."""
    return XResNet1d([3, 4, 6, 3], REFERENCE_WIDTHS, in_channels=in_channels, **kwargs)


@register_encoder("xresnet1d101")
def xresnet1d101(in_channels: int = 12, **kwargs) -> XResNet1d:
    """Reference-width xresnet1d101: 512-d features, ~1.80 M params."""
    return XResNet1d([3, 4, 23, 3], REFERENCE_WIDTHS, in_channels=in_channels, **kwargs)


@register_encoder("xresnet1d50_standard")
def xresnet1d50_standard(in_channels: int = 12, **kwargs) -> XResNet1d:
    """ImageNet-width xresnet1d50 (64/128/256/512 x 4): 2048 channels, 4096-d concat-pooled features."""
    return XResNet1d([3, 4, 6, 3], STANDARD_WIDTHS, in_channels=in_channels, **kwargs)


@register_encoder("xresnet1d101_standard")
def xresnet1d101_standard(in_channels: int = 12, **kwargs) -> XResNet1d:
    """ImageNet-width xresnet1d101 (64/128/256/512 x 4): 2048 channels, 4096-d concat-pooled features."""
    return XResNet1d([3, 4, 23, 3], STANDARD_WIDTHS, in_channels=in_channels, **kwargs)
