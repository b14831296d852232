from .defaults import add_zsi_d2_config  # noqa: F401
