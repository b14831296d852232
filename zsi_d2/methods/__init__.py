"""Zero-shot methods, each a small subpackage composing zsi_d2's shared pieces."""
from . import zsi  # noqa: F401  (registers ZSI's components)
from . import pading  # noqa: F401,E402  (registers PADing's stage-2 meta-architecture)
from . import zegformer  # noqa: F401,E402  (registers ZegFormer's meta-architecture)
