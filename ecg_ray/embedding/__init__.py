"""Embeddings of a store's records from a trained encoder (``ecg-ray embed``) and the file they go to.

:mod:`~ecg_ray.embedding.source` says which encoder and what input it takes,
:mod:`~ecg_ray.embedding.reading` cuts the windows in Ray Data read tasks,
:mod:`~ecg_ray.embedding.pipeline` runs the encoder on a pool of Ray actors and
:mod:`~ecg_ray.embedding.parquet` writes and reads the Parquet file.
"""

from ecg_ray.embedding.parquet import read_embeddings  # noqa: F401
from ecg_ray.embedding.pipeline import embed_store  # noqa: F401
from ecg_ray.embedding.source import EncoderSource, from_encoder_file, random_init  # noqa: F401
