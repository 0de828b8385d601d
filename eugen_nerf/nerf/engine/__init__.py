"""Training and run plumbing: trainer, checkpoints, data manager, metrics, loading a saved run."""
