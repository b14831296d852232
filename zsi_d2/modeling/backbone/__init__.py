from .efficientnet_lite import (  # noqa: F401
    EfficientNetLite, build_efficientnet_lite_backbone, build_efficientnet_lite_fpn_backbone,
)
