"""Training: the resolved config (``config``), one training step (``step``), the loop (``loop.train``, single
process or DDP), distillation.

The loop is not imported here: it loads teachers through ``modelref``, which builds on the config, so importing
it with the package would close a cycle (modelref -> train -> loop -> modelref).
"""

from .config import TrainConfig, load_config
from .step import TrainStep, train_one_epoch

__all__ = ["TrainConfig", "TrainStep", "load_config", "train_one_epoch"]
