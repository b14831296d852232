"""`unwrap`: the model inside a (Distributed)DataParallel wrapper, written once.

Why isinstance and not `getattr(model, "module", model)`: a model may have an attribute called
`module` of its own (an exported model does), which is not a wrapper to look through.
"""
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The wrapped model of DistributedDataParallel / DataParallel; any other model itself."""
    return model.module if isinstance(model, (DistributedDataParallel, nn.DataParallel)) else model
