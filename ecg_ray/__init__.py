"""ecg_ray: distributed self-supervised representation learning on 12-lead ECG with Ray.

Data flows one way through the package: ``data.sources`` (dataset readers) ->
``data.signal`` (checks, resampling, lead order) -> ``data.store`` (zarr v3 corpus) ->
``data.stream`` (Ray Data crops and windows) -> training and evaluation.

A trained encoder is used through ``ecg_ray.load_encoder(PATH)`` (either export format of
``ecg-ray export``) and ``encoder.embed(signal, fs=..., leads=[...])``; see :mod:`ecg_ray.portable`.
"""

from ecg_ray.version import __version__

__all__ = ["__version__", "load_encoder"]


def __getattr__(name: str):
    # Loaded on first use: ``import ecg_ray`` (and so the CLI's start) stays free of torch.
    if name == "load_encoder":
        from ecg_ray.train.checkpoint import load_encoder

        return load_encoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
