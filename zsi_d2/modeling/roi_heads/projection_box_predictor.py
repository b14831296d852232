"""Fast R-CNN box predictor whose classifier is an EmbeddingClassifier (the projection baseline)."""
import logging

from detectron2.config import configurable
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference

from ...errors import InputValueError
from ..calibration import SeenCalibrated
from ..class_embeddings import build_class_embeddings_module
from ..class_set import ZeroShotModule
from ..embedding_classifier import EmbeddingClassifier

__all__ = ["ProjectionBoxPredictor", "build_embedding_classifier"]

logger = logging.getLogger(__name__)


def build_embedding_classifier(cfg, input_dim, kind="thing", learn_background=True):
    """An EmbeddingClassifier over every class the configured datasets name, seen and unseen."""
    return EmbeddingClassifier(
        input_dim,
        build_class_embeddings_module(cfg, kind, learn_background),
        logit_scale=cfg.MODEL.ZERO_SHOT.LOGIT_SCALE,
        learn_logit_scale=cfg.MODEL.ZERO_SHOT.LEARN_LOGIT_SCALE,
    )


class ProjectionBoxPredictor(FastRCNNOutputLayers, SeenCalibrated, ZeroShotModule):
    """Class scores = similarity of projected RoI features with class-name embeddings.

    Box regression is class-agnostic: an unseen class has no regressor of its own.
    Calibrated stacking (MODEL.ZERO_SHOT.CALIBRATION) subtracts gamma from the seen classes'
    logits before the softmax. (Subtracting it from the probabilities instead would leave each
    class's ranking, hence its AP, unchanged, and only drop low seen scores under the threshold.)
    """

    @configurable
    def __init__(self, input_shape, *, classifier: EmbeddingClassifier, calibration_gamma: float = 0.0, **kwargs):
        kwargs["num_classes"] = classifier.num_active
        super().__init__(input_shape, **kwargs)
        self.calibration_gamma = calibration_gamma
        if self.bbox_pred.out_features != len(self.box2box_transform.weights):
            raise InputValueError(
                "Zero-shot box prediction needs class-agnostic box regression: set "
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG True (unseen classes have no regressor)."
            )
        self.cls_score = classifier

    @classmethod
    def from_config(cls, cfg, input_shape, learn_background=True):
        ret = super().from_config(cfg, input_shape)
        input_dim = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
        ret["classifier"] = build_embedding_classifier(cfg, input_dim, learn_background=learn_background)
        ret["calibration_gamma"] = cfg.MODEL.ZERO_SHOT.CALIBRATION.GAMMA
        return ret

    def set_class_names(self, names):
        self.cls_score.set_class_names(names)
        self.num_classes = len(names)

    def predict_probs(self, predictions, proposals, gamma=None):
        """detectron2's, on logits calibrated with `gamma` (None: the configured calibration_gamma)."""
        scores, deltas = predictions
        return super().predict_probs((self.calibrate(scores, gamma), deltas), proposals)

    def inference(self, predictions, proposals, gamma=None):
        """detectron2's FastRCNNOutputLayers.inference, with the calibration `gamma` passed through
        (the gamma search scores cached predictions at each candidate without changing the model)."""
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals, gamma)
        image_shapes = [x.image_size for x in proposals]
        return fast_rcnn_inference(boxes, scores, image_shapes, self.test_score_thresh, self.test_nms_thresh,
                                   self.test_topk_per_image)
