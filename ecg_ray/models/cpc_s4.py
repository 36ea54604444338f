"""ECG-CPC's network: a small strided CNN front end + causal S4 layers as the CPC context network.

Follows the published ECG-CPC pretraining configuration (Al-Masud, Lopez Alcaraz & Strodthoff,
"Benchmarking ECG foundational models: a reality check across clinical tasks", ICLR 2026; code
AI4HealthUOL/ecg-pretraining-strategies, ``conf/config_cpc_ecg_s4.yaml``):

* per-step encoder: four 1-D convolutions of 512 channels, kernel sizes [3, 1, 1, 1], strides
  [2, 1, 1, 1], each followed by BatchNorm and ReLU (``normalization: true``) -> latents z
  (B, ceil(T / 2), 512), so ``downsample = 2``;
* context network: 4 S4 layers of width 512 with state size 8, dropout 0.2, post-norm with
  LayerNorm (``prenorm: false``, ``batchnorm: false``), causal (``causal: true``);
* downstream features: the context outputs pooled as concat(max, mean, last) -> 1536, as for the
  paper's CPC network (:mod:`ecg_ray.models.cpc_net`).

Deviations:

* the S4 layers are S4D (diagonal A, S4D-Lin init, ZOH; :mod:`ecg_ray.models.s4`) where the
  reference uses S4's normal-plus-low-rank HiPPO-LegS kernel, which needs a Cauchy kernel
  (pykeops or a CUDA extension); S4D matches it in the S4D paper's experiments;
* the first convolution is padded on the left only (2 samples), so z_t sees inputs up to 2t and
  no later: with symmetric padding z_t would see sample 2t+1, which z_{t+1}, the target of the
  1-step prediction, also sees;
* parameters: this encoder has 2,951,168 (808,960 in the CNN, 2,142,208 in the S4 layers) and
  the CPC method adds its predictor (512 x 512 per predicted step); the paper reports 3.8 M for
  ECG-CPC without itemising them (its S4 output layer and projection head may differ from the
  S4D ones here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ecg_ray.models.registry import Encoder, register_encoder
from ecg_ray.models.s4 import S4Stack


class CausalConvFrontEnd(nn.Sequential):
    """Strided 1-D CNN, (B, C_in, T) -> (B, width, ceil(T / stride product)), each output seeing no later input."""

    def __init__(self, in_channels: int, width: int, kernel_sizes: tuple[int, ...], strides: tuple[int, ...]):
        layers: list[nn.Module] = []
        channels = in_channels
        for kernel_size, stride in zip(kernel_sizes, strides, strict=True):
            # Left padding of kernel_size - 1: output i covers inputs stride*i - (k-1) .. stride*i,
            # and the length is ceil(T / stride), the Encoder contract for downsample.
            layers += [nn.ConstantPad1d((kernel_size - 1, 0), 0.0),
                       # bias=False: the BatchNorm right after supplies the shift
                       nn.Conv1d(channels, width, kernel_size, stride=stride, bias=False),
                       nn.BatchNorm1d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        super().__init__(*layers)


class CPCS4Encoder(Encoder):
    """CNN + S4 CPC network: ``forward`` (B, C_in, T) -> (B, 3 * width) pooled window features."""

    #: what the encoder gives methods: ``encode`` (B, T', C) latents per step and ``context``
    output = "sequence"
    #: fine-tuned as the paper's CPC network: S4 layers at lr x factor, the CNN at lr x factor^2
    grouped_finetuning = True
    #: the paper's CPC downstream head on the concat-pooled features (BN, dropout, 512 hidden)
    finetune_head = "mlp"

    def __init__(self, in_channels: int = 12, width: int = 512, layers: int = 4, d_state: int = 8,
                 dropout: float = 0.2, kernel_sizes: tuple[int, ...] = (3, 1, 1, 1),
                 strides: tuple[int, ...] = (2, 1, 1, 1), bidirectional: bool = False, norm: str = "layer"):
        super().__init__()
        self.encoder = CausalConvFrontEnd(in_channels, width, tuple(kernel_sizes), tuple(strides))
        # bidirectional=True is for supervised/downstream use only: CPC must not see the future
        self.s4 = S4Stack(width, layers, d_state, dropout=dropout, norm=norm, bidirectional=bidirectional)
        #: whether c_t depends only on z_<=t (what CPC needs; the cpc method refuses a bidirectional encoder)
        self.causal = not bidirectional
        self.out_channels = width
        self.feature_dim = 3 * width
        self.downsample = math.prod(strides)

    def parameter_groups(self) -> list[nn.Module]:
        """Layer groups from the head down (discriminative learning rates): the S4 layers, the CNN."""
        return [self.s4, self.encoder]

    def encode(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> z (B, ceil(T / downsample), width)."""
        return self.encoder(x).transpose(1, 2)

    def context(self, z: Tensor) -> Tensor:
        """z (B, T', width) -> c (B, T', width); c_t depends only on z_<=t unless bidirectional."""
        return self.s4(z)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> context outputs (B, width, ceil(T / downsample))."""
        return self.context(self.encode(x)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        c = self.context(self.encode(x))  # (B, T', width)
        return torch.cat([c.amax(dim=1), c.mean(dim=1), c[:, -1]], dim=1)


@register_encoder("cpc_s4")
def cpc_s4(in_channels: int = 12, **kwargs) -> CPCS4Encoder:
    """ECG-CPC's network: CNN front end (512, strides 2,1,1,1) + 4 causal S4 layers (512, state 8), 1536-d features."""
    return CPCS4Encoder(in_channels=in_channels, **kwargs)


@register_encoder("cpc_s4_bidirectional")
def cpc_s4_bidirectional(in_channels: int = 12, **kwargs) -> CPCS4Encoder:
    """cpc_s4 with bidirectional S4 layers (a causal and an anti-causal kernel each), for supervised training.

    Each time step sees the whole window, as the bidirectional S4 classifiers of Mehari & Strodthoff 2023 do.
    Not for CPC (it would see the steps it predicts) and not loadable from a causal cpc_s4 export: its S4
    layers carry a second kernel.
    """
    return CPCS4Encoder(in_channels=in_channels, bidirectional=True, **kwargs)
