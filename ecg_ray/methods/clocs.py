"""CLOCS (Kiyasseh, Zhu & Clifton, ICML 2021): contrastive learning across time, leads and patients.

Four methods, one view construction each, all with positives by id across views (CLOCS loss,
:mod:`ecg_ray.losses.clocs`, or the by-id NT-Xent of :mod:`ecg_ray.losses.contrastive`):

- ``cmsc`` (Contrastive Multi-Segment Coding): a crop of ``data.crop`` = 2 x segment samples is cut
  into two temporally adjacent, non-overlapping halves; the halves of one record are positives
  (and so are the halves of another crop of the same record in the global batch, e.g. with
  ``data.crops_per_record`` > 1).
- ``cmlc`` (Contrastive Multi-Lead Coding): one view per lead of ``cmlc.leads`` over the same
  segment; the leads of one record are positives.
- ``cmsmlc`` (Contrastive Multi-Segment Multi-Lead Coding): both: 2 segments x L leads = 2L views
  (ordered lead-major as the authors' code: lead 1 segment 1, lead 1 segment 2, lead 2 ...).
- ``patient``: positives are crops of different records of the same patient (``patient_index``
  from the stream); each crop gives two augmented views as in SimCLR, so that every anchor has a
  positive even in batches where its patient has one record only.

What follows the paper / the authors' code (danikiyasseh/CLOCS: ``prepare_dataset.py`` for the
views, ``prepare_miscellaneous.obtain_contrastive_loss`` for the loss, ``run_experiments.py`` for
the settings): temperature 0.1, the loss averaged over every pair of views in both directions,
no augmentation of the views (``input_perturbed: False`` for CMSC/CMLC/CMSMLC), a linear
projection to the embedding (their network ends in one Linear layer; E = 128 here).

Deviations, and why:

- Identity. The paper's positives share the PATIENT id. In its pretraining sets (Chapman,
  PhysioNet 2020) a patient has one recording, so patient = record there. Our corpora have
  several records per patient (PTB-XL, MIMIC-IV-ECG), and crops of different records of one
  patient are what the ``patient`` method contrasts; cmsc/cmlc/cmsmlc therefore use the RECORD
  (``record_index`` with ``store_index``: unique over the stores of a mixture) and keep the
  CLOCS view constructions separate from the patient positives.
- Leads. CLOCS encodes every lead separately with one single-lead encoder. Our encoders take 12
  leads (evaluation and the online probe feed all 12), so a lead view is the 12-lead input with
  every other lead ZEROED: each lead keeps its own input channel (and filters) as at evaluation,
  and the encoder's weights are shared across views as in CLOCS. Replicating the lead into all
  12 channels would be lead-agnostic like CLOCS's encoder, but would train the first layer on
  inputs whose channels are all equal, which evaluation never shows it. Cost: one encoder pass
  per lead view (12 for cmlc with all leads, 24 for cmsmlc).
- Loss. The authors' code keeps only the last view pair's terms and counts each off-diagonal
  positive pair for one anchor only; the paper's formulation is implemented (see
  :mod:`ecg_ray.losses.clocs`). ``loss: ntxent`` uses the by-id NT-Xent instead.
- Normalisation. CLOCS min-max normalises each view; our stores hold millivolts and every method
  reads them as such, so views are not rescaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.errors import ConfigError
from ecg_ray.losses.clocs import clocs_loss, clocs_uniform_loss
from ecg_ray.losses.contrastive import contrastive_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.models.heads import MLPHead

LOSSES = ("clocs", "ntxent")
#: the 4-lead set of the authors' 4-lead experiments (``run_experiments.py``: nleads = 4)
FOUR_LEADS = ["II", "V2", "aVL", "aVR"]
#: store_index fits 15 bits (the stream sends it as int16), so record * 2**15 + store is unique per record
_STORE_CODES = 2**15


def _valid_leads(leads) -> bool:
    return len(leads) >= 1 and len(set(leads)) == len(leads) and all(name in CANONICAL_LEADS for name in leads)


_COMMON_RULES = (("hidden_dim", ">= 0 (0: one linear layer)", lambda v: v >= 0),
                 ("projection_dim", ">= 1", lambda v: v >= 1),
                 ("temperature", "> 0", lambda v: v > 0),
                 ("loss", f"one of {', '.join(LOSSES)}", lambda v: v in LOSSES))
_LEAD_RULE = ("leads", f"distinct lead names of {', '.join(CANONICAL_LEADS)}", _valid_leads)


@dataclass
class CMSCConfig:
    #: 0: the embedding is one Linear layer of the encoder's features (CLOCS); > 0: a 2-layer MLP
    hidden_dim: int = 0
    #: embedding dimension E (CLOCS: 128 in the main results, 32..320 in the ablation)
    projection_dim: int = 128
    temperature: float = 0.1
    #: clocs: cross-view loss of the paper; ntxent: by-id NT-Xent over all views (ecg_ray.losses.contrastive)
    loss: str = "clocs"
    #: augment every view with ``augmentations:`` (CLOCS: no perturbation)
    augment: bool = False
    RULES: ClassVar = _COMMON_RULES


@dataclass
class CMLCConfig(CMSCConfig):
    #: one view per lead (at least 2); the authors ran all 12 and a 4-lead set (II, V2, aVL, aVR)
    leads: list[str] = field(default_factory=lambda: list(CANONICAL_LEADS))
    RULES: ClassVar = (*_COMMON_RULES, _LEAD_RULE, ("leads", "at least 2 leads (one view each)", lambda v: len(v) >= 2))


@dataclass
class CMSMLCConfig(CMSCConfig):
    #: 2 views (segments) per lead
    leads: list[str] = field(default_factory=lambda: list(CANONICAL_LEADS))
    RULES: ClassVar = (*_COMMON_RULES, _LEAD_RULE)


@dataclass
class PatientConfig(CMSCConfig):
    #: by-id NT-Xent (every row of both views a candidate); clocs: the cross-view loss
    loss: str = "ntxent"
    #: two augmented views of each crop (its own positive when its patient has no other record in the batch)
    augment: bool = True
    RULES: ClassVar = _COMMON_RULES


class _ClocsMethod(Method):
    """Views of each row -> encoder -> projection -> loss with positives by id (no name: not registered)."""

    config_class = CMSCConfig
    #: segments each crop is cut into (2: two adjacent halves of data.crop)
    segments: ClassVar[int] = 1
    #: one view per lead of ``leads`` (each segment's)
    lead_views: ClassVar[bool] = False

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = self.settings
        if not c.augment and config.augmentations is not None:
            raise ConfigError(f"augmentations: set, but {self.name}.augment is false (CLOCS views are not "
                              f"augmented): set {self.name}.augment=true or remove augmentations")
        if config.data.crop % self.segments:
            raise ConfigError(f"data.crop={config.data.crop}: {self.name} cuts each crop into {self.segments} "
                              f"adjacent segments, so data.crop must be a multiple of {self.segments} "
                              f"(e.g. {self.segments * config.data.window} for segments of data.window)")
        leads = getattr(c, "leads", list(CANONICAL_LEADS))
        #: (L, 12) one-hot rows: the lead each lead view keeps
        self.register_buffer("lead_masks", torch.eye(len(CANONICAL_LEADS))[[CANONICAL_LEADS.index(n) for n in leads]],
                             persistent=False)
        num_layers = 2 if c.hidden_dim > 0 else 1
        self.projector = MLPHead(encoder.feature_dim, c.hidden_dim or c.projection_dim, c.projection_dim,
                                 num_layers=num_layers, batch_norm=False)
        self.temperature = c.temperature

    def make_views(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, V, 12, T_view) views of the crops ``x`` (B, 12, T)."""
        raise NotImplementedError

    def ids(self, batch: Batch) -> torch.Tensor:
        """Each row's id: rows with the same id are positives. The record, unique over a mixture's stores."""
        return batch["record_index"].long() * _STORE_CODES + batch["store_index"].long()

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        views = self.make_views(batch["signal"])
        b, n_views = views.shape[:2]
        flat = views.reshape(b * n_views, *views.shape[2:])
        if self.settings.augment:
            flat = self.augment(flat, self.generator)
            if self.lead_views:  # additive noise must not bring the zeroed leads back
                # views are lead-major (lead 1 segment 1, lead 1 segment 2, ...): each view's lead mask
                masks = self.lead_masks.repeat_interleave(self.segments, dim=0).to(flat.dtype)
                flat = (flat.reshape(b, n_views, *flat.shape[1:]) * masks[:, :, None]).reshape(flat.shape)
        # One encoder pass over every view: the encoder is shared across views, as in CLOCS.
        z = self.projector(self.encoder(flat))
        self.record_embedding(z)
        ids = self.ids(batch)
        if self.settings.loss == "clocs":
            loss = clocs_loss(z.reshape(b, n_views, -1), ids, temperature=self.temperature, gather=True)
        else:
            loss = contrastive_loss(z, ids.repeat_interleave(n_views), temperature=self.temperature, gather=True)
        return {"loss": loss}

    def uniform_loss(self, batch_per_worker: int, world: int) -> float:
        if self.settings.loss == "clocs":
            return clocs_uniform_loss(batch_per_worker, world)
        # NT-Xent by id: V N - 1 candidates, V - 1 positives each (ids unique within the batch)
        n_views = self.views_per_row()
        return math.log((n_views * batch_per_worker * world - 1) / (n_views - 1))

    def views_per_row(self) -> int:
        return self.segments * (len(self.lead_masks) if self.lead_views else 1)

    def keep_leads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ..., 12, T) -> (B, ..., L, 12, T): one copy per lead view, every other lead zeroed."""
        return x.unsqueeze(-3) * self.lead_masks.to(x.dtype)[:, :, None]

    @staticmethod
    def halves(x: torch.Tensor) -> torch.Tensor:
        """(B, 12, 2S) -> (B, 2, 12, S): the first and the second half, adjacent and non-overlapping."""
        b, leads, t = x.shape
        return x.reshape(b, leads, 2, t // 2).transpose(1, 2)


class CMSC(_ClocsMethod):
    name = "cmsc"
    display_name = "CLOCS-CMSC"
    config_class = CMSCConfig
    batch_fields = ("record_index", "store_index")
    segments = 2

    def make_views(self, x):
        return self.halves(x)


class CMLC(_ClocsMethod):
    name = "cmlc"
    display_name = "CLOCS-CMLC"
    config_class = CMLCConfig
    batch_fields = ("record_index", "store_index")
    lead_views = True

    def make_views(self, x):
        return self.keep_leads(x)


class CMSMLC(_ClocsMethod):
    name = "cmsmlc"
    display_name = "CLOCS-CMSMLC"
    config_class = CMSMLCConfig
    batch_fields = ("record_index", "store_index")
    segments = 2
    lead_views = True

    def make_views(self, x):
        # (B, 2, 12, S) -> (B, 2, L, 12, S) -> lead-major (B, L, 2, 12, S) -> (B, 2L, 12, S)
        views = self.keep_leads(self.halves(x)).transpose(1, 2)
        return views.reshape(x.shape[0], -1, *views.shape[3:])


class PatientContrastive(_ClocsMethod):
    name = "patient"
    display_name = "Patient-contrastive"
    config_class = PatientConfig
    batch_fields = ("patient_index",)

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        if not self.settings.augment:
            raise ConfigError("patient.augment=false: both views of a crop would be the same signal, and "
                              "every anchor's own positive trivially identical; keep patient.augment=true")

    def make_views(self, x):
        # Two copies of the crop; with patient.augment (the default) each gets its own augmentation.
        return x.unsqueeze(1).expand(-1, 2, -1, -1)

    def views_per_row(self) -> int:
        return 2

    def ids(self, batch):
        return batch["patient_index"].long()
