"""Training: the resolved config, the loop (single process or DDP), and atomic checkpoints."""

from .config import TrainConfig, load_config
from .loop import train

__all__ = ["TrainConfig", "load_config", "train"]
