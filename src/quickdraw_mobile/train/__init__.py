"""Training: the resolved config (``config``), the loop (``loop.train``, single process or DDP), distillation.

Only the config is imported here: ``modelref`` builds on it, and the loop loads teachers through ``modelref``,
so importing the loop with the package would close a cycle (modelref -> train -> loop -> modelref).
"""

from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
