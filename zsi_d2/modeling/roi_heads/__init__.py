from .projection_box_predictor import ProjectionBoxPredictor  # noqa: F401
from .zero_shot_roi_heads import ZeroShotROIHeads  # noqa: F401
