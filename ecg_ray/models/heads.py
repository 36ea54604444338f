"""Projection and classification heads placed on top of an encoder's pooled features.

``MLPHead`` serves as the SimCLR projection (512->512->ReLU->16, no BN in the reference), the
BYOL projector/predictor (512->512(BN,ReLU)->16, 16->512->16) and the SwAV head
(512->2048(BN,ReLU)->128). ``LinearHead`` is the linear-evaluation head and
``CPCClassifierHead`` the paper's default downstream head on the 1536-d CPC features.
"""

from __future__ import annotations

from torch import Tensor, nn

from ecg_ray.errors import ConfigError


class MLPHead(nn.Module):
    """``num_layers`` Linear layers with (BN) + ReLU between them; optional BN after the last one."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            last = i == num_layers - 1
            use_bn = last_bn if last else batch_norm
            # a Linear followed by BN needs no bias of its own
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    """A single Linear layer (linear evaluation protocol)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, n_classes)
        self.in_dim = in_dim
        self.out_dim = n_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class CPCClassifierHead(nn.Module):
    """BN, Dropout 0.25, Linear in->hidden, ReLU, BN, Dropout 0.5, Linear hidden->n (the paper's head)."""

    def __init__(self, in_dim: int = 1536, n_classes: int = 71, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(in_dim),
            nn.Dropout(0.25),
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(0.5),
            nn.Linear(hidden, n_classes),
        )
        self.in_dim = in_dim
        self.out_dim = n_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


HEAD_KINDS = ("linear", "mlp")


def build_head(kind: str, in_dim: int, n_classes: int) -> nn.Module:
    """Downstream head: "linear" -> LinearHead, "mlp" -> CPCClassifierHead."""
    if kind == "linear":
        return LinearHead(in_dim, n_classes)
    if kind == "mlp":
        return CPCClassifierHead(in_dim, n_classes)
    raise ConfigError(f"unknown head kind {kind!r}; valid kinds: {', '.join(HEAD_KINDS)}")
