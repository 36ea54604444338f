"""S4D: a diagonal structured state-space layer (Gu, Gupta, Goel & Re, NeurIPS 2022) in pure PyTorch.

Each of the H channels is a linear time-invariant state-space model with N real state dimensions,
held as N/2 complex modes with their conjugates implied (the S4/S4D convention, so ``d_state`` is
the same number as in S4's configurations, e.g. ECG-CPC's ``state_dim: 8``)::

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),   A diagonal complex, B = 1

discretised with step dt (per channel, log-uniform in [dt_min, dt_max]) by zero-order hold
(``discretization="zoh"``, S4D's default) or the bilinear transform. A diagonal A makes the
length-L convolution kernel a Vandermonde product computed in closed form,
``K[l] = 2 Re(sum_n C_n dB_n dA_n^l)``, which is applied by FFT convolution in O(L log L): no
recurrence at training time and no custom kernels, so the layer runs on CPU and GPU alike.

Initialisation of A (``init``): ``"lin"`` is S4D-Lin, A_n = -1/2 + i pi n, the default of the S4D
paper's standalone layer; ``"inv"`` is S4D-Inv, A_n = -1/2 + i (N/pi) (N/(2n+1) - 1). The real
part is stored as log(-Re A) so that A stays stable (Re A < 0) under training.

The layer is causal by default (y_t depends on u_<=t only: CPC predicts the future from it);
``bidirectional=True`` adds a second, anti-causal kernel over the reversed sequence whose output
is summed with the causal one (the S4 standalone layer's construction), for downstream use.
After the SSM come GELU, dropout and a position-wise Linear(H, 2H) + GLU output, as in S4D.

:class:`S4Stack` stacks such layers in residual blocks with LayerNorm (or BatchNorm) and dropout,
post-norm by default as ECG-CPC's context network (``prenorm: false``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecg_ray.errors import ConfigError
from ecg_ray.optim import cap_lr

INITS = ("lin", "inv")
DISCRETIZATIONS = ("zoh", "bilinear")
NORMS = ("layer", "batch")
#: the learning-rate cap of the SSM dynamics (log dt, A), S4's and S4D's ``lr=min(0.001, lr)``
SSM_LR = 0.001


class S4DLayer(nn.Module):
    """One S4D layer: (B, H, L) -> (B, H, L); the SSM convolution, D skip, GELU, dropout, Linear + GLU."""

    def __init__(self, d_model: int, d_state: int = 64, *, dt_min: float = 0.001, dt_max: float = 0.1,
                 init: str = "lin", discretization: str = "zoh", bidirectional: bool = False,
                 dropout: float = 0.0, ssm_lr: float | None = SSM_LR):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ConfigError(f"s4: d_state must be an even number >= 2 (N/2 complex modes), got {d_state}")
        if init not in INITS:
            raise ConfigError(f"s4: init must be one of {', '.join(INITS)}, got {init!r}")
        if discretization not in DISCRETIZATIONS:
            raise ConfigError(f"s4: discretization must be one of {', '.join(DISCRETIZATIONS)}, "
                              f"got {discretization!r}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"s4: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model, self.d_state = d_model, d_state
        self.discretization, self.bidirectional = discretization, bidirectional
        modes = d_state // 2
        kernels = 2 if bidirectional else 1
        n = torch.arange(modes, dtype=torch.float32)
        if init == "lin":
            imag = math.pi * n
        else:
            imag = (d_state / math.pi) * (d_state / (2 * n + 1) - 1)
        # The SSM dynamics (log dt, log(-Re A), Im A) are stored flat, as 1-D parameters: the
        # optimizer then gives them no weight decay (ecg_ray.optim.parameter_groups), as S4D does;
        # decaying them would pull every channel towards dt = 1 and A = -1 + 0i.
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_neg_real = nn.Parameter(torch.full((d_model * modes,), math.log(0.5)))
        self.imag = nn.Parameter(imag.repeat(d_model))
        if ssm_lr is not None:
            # S4/S4D train A and dt at min(lr, 0.001) (their optimizer hook): at ECG-CPC's lr 3e-3
            # the dynamics would otherwise move 3x faster than in the reference
            for param in (self.log_dt, self.log_neg_real, self.imag):
                cap_lr(param, ssm_lr)
        # C complex (kernels, H, N/2) as (re, im) pairs; B = 1 is folded into C (S4D's choice).
        # Variance 1/2 per part: the complex standard normal of S4D's torch.randn(..., dtype=cfloat).
        self.C = nn.Parameter(torch.randn(kernels, d_model, modes, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def discretized(self) -> tuple[Tensor, Tensor, Tensor]:
        """(dA, dB, C), each complex (…, H, N/2): the discrete-time diagonal system (fp32 / complex64)."""
        modes = self.d_state // 2
        dt = self.log_dt.float().exp()[:, None]  # (H, 1)
        A = torch.complex(-self.log_neg_real.float().exp(), self.imag.float()).view(self.d_model, modes)
        dtA = dt * A
        if self.discretization == "zoh":
            dA = torch.exp(dtA)
            dB = (dA - 1) / A  # B = 1
        else:  # bilinear (Tustin)
            dA = (1 + dtA / 2) / (1 - dtA / 2)
            dB = dt / (1 - dtA / 2)
        return dA, dB, torch.view_as_complex(self.C.float())

    def kernel(self, length: int) -> Tensor:
        """The SSM convolution kernel (kernels, H, length), K[l] = 2 Re(sum_n C_n dB_n dA_n^l)."""
        dA, dB, C = self.discretized()
        # Vandermonde: dA^l = exp(l log dA); log of the complex diagonal is exact for |dA| < 1
        steps = torch.arange(length, device=dA.device, dtype=torch.float32)
        vandermonde = torch.exp(torch.log(dA)[..., None] * steps)  # (H, N/2, L)
        return 2 * torch.einsum("khn,hnl->khl", C * dB, vandermonde).real

    def ssm(self, u: Tensor) -> Tensor:
        """The state-space part alone, (B, H, L) -> (B, H, L): FFT convolution with the kernel + D u (fp32)."""
        # FFTs run in fp32 whatever the autocast: bf16/fp16 FFTs lose the long kernel's tail (and
        # CPU has no half-precision FFT); the convolution is a small share of the layer's cost.
        with torch.autocast(u.device.type, enabled=False):
            u = u.float()
            length = u.shape[-1]
            k = self.kernel(length)
            if self.bidirectional:
                # Causal kernel at lags 0..L-1, anti-causal kernel reversed at lags -L..-1 of the
                # length-2L circular convolution: output t sees u_<=t through the first and
                # u_>t through the second.
                k = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
            else:
                k = k[0]
            fft_length = 2 * length  # zero padding makes the circular convolution linear
            y = torch.fft.irfft(torch.fft.rfft(u, n=fft_length) * torch.fft.rfft(k, n=fft_length),
                                n=fft_length)[..., :length]
            return y + self.D.float()[:, None] * u

    def forward(self, u: Tensor) -> Tensor:
        y = self.dropout(F.gelu(self.ssm(u)))
        # position-wise output mixing across channels with a GLU (S4D's output layer)
        return F.glu(self.output_linear(y.transpose(1, 2).to(u.dtype)), dim=-1).transpose(1, 2)


class S4Block(nn.Module):
    """Residual block around an :class:`S4DLayer` on (B, L, H): x + dropout(s4(x)), normalised after (or before)."""

    def __init__(self, d_model: int, d_state: int, *, dropout: float = 0.0, norm: str = "layer",
                 prenorm: bool = False, **layer_options):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"s4: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.layer = S4DLayer(d_model, d_state, dropout=dropout, **layer_options)
        # BatchNorm normalises with statistics over batch and time: in training mode an output
        # then depends (weakly) on later steps, so causal uses (CPC) should keep LayerNorm.
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.prenorm = prenorm
        self.dropout = nn.Dropout(dropout)

    def _normalise(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.BatchNorm1d):
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        z = self._normalise(x) if self.prenorm else x
        x = x + self.dropout(self.layer(z.transpose(1, 2)).transpose(1, 2))
        return x if self.prenorm else self._normalise(x)


class S4Stack(nn.Module):
    """``layers`` S4 blocks of width ``d_model``: (B, L, d_model) -> (B, L, d_model), causal unless bidirectional."""

    def __init__(self, d_model: int = 512, layers: int = 4, d_state: int = 8, *, dropout: float = 0.2,
                 norm: str = "layer", prenorm: bool = False, bidirectional: bool = False, init: str = "lin",
                 discretization: str = "zoh", dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        if layers < 1:
            raise ConfigError(f"s4: layers must be >= 1, got {layers}")
        self.bidirectional = bidirectional
        self.blocks = nn.ModuleList(
            S4Block(d_model, d_state, dropout=dropout, norm=norm, prenorm=prenorm, bidirectional=bidirectional,
                    init=init, discretization=discretization, dt_min=dt_min, dt_max=dt_max)
            for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x
