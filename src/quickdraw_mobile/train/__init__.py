"""Training: the resolved config, one training step (``step``), the loop (single process or DDP), checkpoints."""

from .config import TrainConfig, load_config
from .loop import train
from .step import TrainStep, train_one_epoch

__all__ = ["TrainConfig", "TrainStep", "load_config", "train", "train_one_epoch"]
