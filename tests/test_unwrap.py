"""unwrap looks through DataParallel wrappers only, not through a model's own `module` attribute."""
from torch import nn

import zsi_d2  # noqa: F401
from zsi_d2.utils.model import unwrap


class _HasModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.module = nn.Linear(2, 2)  # like an exported model's traced graph


def test_unwrap_wrappers_only():
    inner = nn.Linear(2, 2)
    assert unwrap(nn.DataParallel(inner)) is inner
    assert unwrap(inner) is inner
    own = _HasModule()
    assert unwrap(own) is own
