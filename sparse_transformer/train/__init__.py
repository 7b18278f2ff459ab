"""Training (paper 6): the loop, checkpoints, data parallelism, precision and metrics."""

__all__ = ["TrainConfig", "train", "load_checkpoint", "save_checkpoint"]


def __getattr__(name: str):
    # Lazy, so ``sparse_transformer.evaluate`` can import ``train.precision`` without a cycle.
    if name in ("TrainConfig", "train"):
        from sparse_transformer.train import loop

        return getattr(loop, name)
    if name in ("load_checkpoint", "save_checkpoint"):
        from sparse_transformer.train import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'sparse_transformer.train' has no attribute {name!r}")
