"""The paper's CPC network "4FC+2LSTM" for 12-lead ECG.

A per-time-step encoder (four kernel-1 convolutions, i.e. an MLP applied to each sample, so no
downsampling) produces z_t; a unidirectional (causal) 2-layer LSTM turns z_<=t into context c_t.
CPC predicts future z from c, so the LSTM must not look ahead; for downstream use the LSTM
outputs are pooled as concat(max, mean, last) -> 3 x 512 = 1536 features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecg_ray.models.registry import Encoder, register_encoder


class CPCEncoder(Encoder):
    """4FC+2LSTM CPC network: ``forward`` (B, C_in, T) -> (B, 3 * hidden) pooled window features."""

    #: what the encoder gives methods: ``encode`` (B, T, C) latents per time step and ``context``
    output = "sequence"
    #: the reference fine-tunes the LSTM at lr x factor and the per-step layers at lr x factor^2
    grouped_finetuning = True
    #: the paper's downstream head on the 1536-d features (BN, dropout, 512 hidden)
    finetune_head = "mlp"

    def __init__(self, in_channels: int = 12, hidden: int = 512, lstm_layers: int = 2, fc_layers: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        ni = in_channels
        for _ in range(fc_layers):
            # bias=False: the BatchNorm right after supplies the shift
            layers += [
                nn.Conv1d(ni, hidden, kernel_size=1, bias=False),
                nn.BatchNorm1d(hidden),
                nn.ReLU(inplace=True),
            ]
            ni = hidden
        self.encoder = nn.Sequential(*layers)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=lstm_layers, batch_first=True, bidirectional=False)
        self.hidden = hidden
        self.out_channels = hidden
        self.feature_dim = 3 * hidden
        self.downsample = 1

    def parameter_groups(self) -> list[nn.Module]:
        """Layer groups from the head down (discriminative learning rates): the LSTM, the per-step layers."""
        return [self.lstm, self.encoder]

    def encode(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> z (B, T, hidden)."""
        return self.encoder(x).transpose(1, 2)

    def context(self, z: Tensor) -> Tensor:
        """z (B, T, hidden) -> c (B, T, hidden); c_t depends only on z_<=t."""
        # The LSTM runs in fp32 whatever the autocast: under bf16 autocast cuDNN would run it in fp16
        # without a grad scaler (underflowing gradients over ~1000 recurrent steps).
        with torch.autocast(z.device.type, enabled=False):
            c, _ = self.lstm(z.float())
        return c

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> LSTM outputs (B, hidden, T)."""
        return self.context(self.encode(x)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        c = self.context(self.encode(x))  # (B, T, H)
        return torch.cat([c.amax(dim=1), c.mean(dim=1), c[:, -1]], dim=1)


@register_encoder("cpc_4fc2lstm")
def cpc_4fc2lstm(in_channels: int = 12, **kwargs) -> CPCEncoder:
    """The paper's CPC network: 4 kernel-1 conv layers (512) + 2-layer LSTM (512), 1536-d features."""
    return CPCEncoder(in_channels=in_channels, **kwargs)
