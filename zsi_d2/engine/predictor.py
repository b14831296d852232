"""detectron2's DefaultPredictor for zsi_d2 models, with any class names.

Why: detectron2's DefaultPredictor loads weights with a checkpointer that skips what does not fit
(a random head then predicts), and knows nothing of vocabularies. This one loads every parameter or
stops (ZeroShotCheckpointer, purpose "eval"), scores the config's test set by default (as every
zsi_d2 model in eval mode) or the vocabulary it is given (zsi_d2.set_vocabulary), and carries the
detectron2 Metadata of what it scores, for drawing and export.
"""
import logging
from typing import Optional, Sequence

import detectron2.data.transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..modeling.vocabulary import class_set_metadata, set_vocabulary
from ..utils.model import unwrap
from .checkpoint import ZeroShotCheckpointer
from .weights import check_weights

__all__ = ["ZeroShotPredictor"]

logger = logging.getLogger(__name__)


class ZeroShotPredictor(DefaultPredictor):
    """`predictor(bgr_image)` -> the model's output dict for one image (detectron2's DefaultPredictor
    call: BGR HxWx3 uint8 in, resized to INPUT.MIN_SIZE_TEST, outputs at the input's size).

    vocabulary: class names to score (None: the config's test set); extra_vocabulary: names scored
    beside them (the test set and a few new names, without listing the split); stuff: entries that
    are amorphous regions. `class_set` and `metadata` describe what the outputs' ids index.
    """

    def __init__(self, cfg, vocabulary: Optional[Sequence[str]] = None, stuff: Sequence[str] = (),
                 extra_vocabulary: Sequence[str] = ()):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()  # the config's test set (ZeroShotMetaArch), until a vocabulary is set
        check_weights(cfg.MODEL.WEIGHTS)
        if cfg.MODEL.WEIGHTS:
            ZeroShotCheckpointer.from_config(cfg, self.model, purpose="eval").load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: predicting with a randomly initialised model")
        if extra_vocabulary:
            base = vocabulary if vocabulary is not None else unwrap(self.model).inference_class_set.names
            vocabulary = list(base) + list(extra_vocabulary)
        if vocabulary is not None:
            set_vocabulary(self.model, vocabulary, cfg, stuff=stuff)
        self.class_set = unwrap(self.model).class_set
        self.metadata = class_set_metadata(self.class_set)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
