"""The format tags of the files ecg_ray writes for runs: checkpoints and exported encoders.

Kept apart (no torch, no other ecg_ray import) so that the checkpoint code and the encoder-file
reader can both name them without importing each other.
"""

from __future__ import annotations

#: ``format`` of a training checkpoint's ``state.pt``
CHECKPOINT_FORMAT = "ecg_ray.checkpoint.v1"
#: ``format`` of a file written by ``ecg-ray export``
ENCODER_FORMAT = "ecg_ray.encoder.v1"
