"""Trained encoders outside training: portable exports, input preparation and ``encoder.embed``.

- :mod:`.spec`: :class:`InputSpec`, what an exported encoder was trained on (rate, leads, units,
  crop, evaluation windows, pooling, normalisation, lead masking).
- :mod:`.prepare`: :func:`prepare_signal`, a user's recording (time, leads) at any rate and lead
  order brought to the encoder's input, with ``prepare``'s resampling filter.
- :mod:`.embed`: :func:`embed_signal`, behind ``encoder.embed(signal, fs=..., leads=[...])``.
- :mod:`.folder`: loading a safetensors export folder (torch + safetensors + ecg_ray's models only).
- :mod:`.export`: writing one (``ecg-ray export RUN --format safetensors --out DIR``) with its
  ``config.json`` and model card (:mod:`.model_card`).

``ecg_ray.load_encoder(PATH)`` loads either export format and sets ``encoder.input_spec``.
"""

from __future__ import annotations

# embed registers itself as what Encoder.embed runs: importing the package (InputSpec lives here) is enough
from ecg_ray.portable.embed import embed_signal
from ecg_ray.portable.prepare import SignalError, lead_columns, prepare_signal, record_windows, window_starts
from ecg_ray.portable.spec import CANONICAL_LEADS, InputSpec, lead_masking_in, spec_from_run

__all__ = ["CANONICAL_LEADS", "InputSpec", "SignalError", "embed_signal", "lead_columns", "lead_masking_in",
           "load_portable", "prepare_signal", "record_windows", "spec_from_run", "window_starts"]


def __getattr__(name: str):
    # loading a folder needs safetensors: imported on first use
    if name == "load_portable":
        from ecg_ray.portable.folder import load_portable

        return load_portable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
