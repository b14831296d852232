from .zero_shot_rcnn import ZeroShotRCNN  # noqa: F401
