"""Training on Ray Train: per-worker train functions, the TorchTrainer builder, checkpoints."""
