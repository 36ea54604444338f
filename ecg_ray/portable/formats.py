"""The format tags of the files ecg_ray writes for runs: checkpoints and exported encoders (both formats).

Kept apart (no torch, no other ecg_ray import) so that the checkpoint code and the encoder-file
reader can both name them without importing each other.
"""

from __future__ import annotations

#: ``format`` of a training checkpoint's ``state.pt``
CHECKPOINT_FORMAT = "ecg_ray.checkpoint.v1"
#: ``format`` of a file written by ``ecg-ray export``
ENCODER_FORMAT = "ecg_ray.encoder.v1"
#: ``format`` (with ``format_version``) in the ``config.json`` of ``ecg-ray export --format safetensors``
PORTABLE_FORMAT = "ecg_ray.encoder.safetensors"
PORTABLE_FORMAT_VERSION = 1
#: the files of that folder (the Hugging Face Hub layout: weights, config, model card)
PORTABLE_WEIGHTS = "model.safetensors"
PORTABLE_CONFIG = "config.json"
PORTABLE_CARD = "README.md"
