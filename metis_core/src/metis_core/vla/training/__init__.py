"""Training the METIS policy: recipes as configs, the loop (one process, DDP or FSDP under
``torchrun``), exact checkpoints and held-out evaluation. Run it with ``metis train``.

Imported lazily: needs ``metis-core[vla]`` (and ``metis-datasets`` for the data).
"""

from metis_core.vla.training.config import RECIPES, TrainConfig, load_config
from metis_core.vla.training.trainer import ResumeMismatchError, Trainer, TrainResult, learning_rate

__all__ = [
    "RECIPES",
    "ResumeMismatchError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "learning_rate",
    "load_config",
]
