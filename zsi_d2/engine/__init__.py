"""Training/evaluation glue on top of detectron2's engine (subclassed or wrapped, never forked)."""
from .launch import launch  # noqa: F401
from .zero_shot_test import save_results, zero_shot_test  # noqa: F401
from .weights import check_weights  # noqa: F401
from .device import check_device  # noqa: F401
from .checkpoint import ZeroShotCheckpointer  # noqa: F401
from .optimizer import build_optimizer  # noqa: F401
from .lr_scheduler import build_lr_scheduler  # noqa: F401
from .trainer import ZeroShotTrainer, trainer_class_for  # noqa: F401
from .generative_trainer import GenerativeTrainer  # noqa: F401
from .predictor import ZeroShotPredictor  # noqa: F401
from . import train_command  # noqa: F401
