from .efficientnet_lite import EfficientNetLite, build_efficientnet_lite_fpn_backbone  # noqa: F401
