"""The version of ecg_ray, written into every store manifest, checkpoint and export (one definition)."""

__version__ = "0.1.0"
