"""Zero-shot methods, each a small subpackage composing zsi_d2's shared pieces."""
from . import zsi  # noqa: F401  (registers ZSI's components)
