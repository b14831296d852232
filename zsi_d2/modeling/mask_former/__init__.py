"""Mask-classification core (Mask2Former-style), pure PyTorch: see docs/design/mask_former_core.md."""
