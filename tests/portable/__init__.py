"""Tests of portable exports (safetensors folders), ``ecg_ray.load_encoder`` and ``encoder.embed``."""
