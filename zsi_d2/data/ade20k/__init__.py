"""ADE20k-Full (847 classes): the published class table. Kept free of registration so that
zsi_d2/data/splits.py can import it; the datasets are registered by zsi_d2.data.semantic."""
from .categories import ADE20K_FULL_CATEGORIES, ADE20K_FULL_FREQUENCIES  # noqa: F401
