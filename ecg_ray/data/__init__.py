"""Data layer: dataset readers, signal checks, the zarr store and the Ray Data streams."""
