"""Training (paper 6): the loop, its options, run directories, checkpoints, data parallelism
and metrics."""

__all__ = ["TrainConfig", "train", "load_checkpoint", "save_checkpoint"]


def __getattr__(name: str):
    # Lazy: the CLI reads TrainConfig's defaults for --help without importing torch.
    if name == "TrainConfig":
        from sparse_transformer.train.config import TrainConfig

        return TrainConfig
    if name == "train":
        from sparse_transformer.train.loop import train

        return train
    if name in ("load_checkpoint", "save_checkpoint"):
        from sparse_transformer.train import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'sparse_transformer.train' has no attribute {name!r}")
