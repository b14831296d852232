"""SIGN on zsi_d2 (projects/SIGN): importing registers the SIGN meta-architecture. SIGN's code is
built on CaGNet's, and so is this project: it imports projects/CaGNet's package."""
import os
import sys

_CAGNET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "CaGNet")
if _CAGNET not in sys.path:
    sys.path.insert(0, _CAGNET)

from .config import add_sign_config  # noqa: E402,F401
from .meta_arch import SIGN  # noqa: E402,F401
from .positional import annealed_weights, positional_encoding_2d  # noqa: E402,F401
