"""A tiny encoder for embedding tests (a conv layer and a mean over time: milliseconds per 10k windows).

Importing this module registers nothing; the ``tiny_encoder`` fixture registers it for one test.
Ray actors unpickle it by reference, so it lives in an importable module, not in a test file.
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_ray.models.registry import Encoder

NAME = "tiny_test_encoder"


class TinyEncoder(Encoder):
    """(B, 12, T) -> (B, 16): tanh of a 5-tap convolution, averaged over time (any T >= 1)."""

    def __init__(self, in_channels: int = 12, width: int = 16):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, width, 5, padding=2)
        self.feature_dim, self.downsample = width, 1

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(-1)


class FailingEncoder(TinyEncoder):
    """Fails on any window of a record whose lead I holds a record number >= ``fail_from`` (synthetic stores)."""

    fail_from = 5000

    def forward(self, x):
        if bool((x[:, 0] >= self.fail_from).any()):
            raise ValueError("planned failure inside the encoder")
        return super().forward(x)
