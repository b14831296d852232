"""zsi_d2: zero-shot instance, semantic and panoptic segmentation for detectron2.

Importing zsi_d2 makes detectron2 usable (see `zsi_d2.compat`), registers the built-in datasets
and registers every zsi_d2 model component in detectron2's registries.
"""
from . import compat

compat.apply()

from . import data  # noqa: E402,F401  (registers datasets)
from . import modeling  # noqa: E402,F401  (registers meta-architectures, heads, backbones)
from . import methods  # noqa: E402,F401  (registers each method's components)
from .config import add_zsi_d2_config, get_zsi_d2_cfg  # noqa: E402,F401
from .modeling.vocabulary import set_vocabulary  # noqa: E402,F401  (any class names on a built model)

__version__ = "0.1.0"
