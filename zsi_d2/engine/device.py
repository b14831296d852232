"""MODEL.DEVICE checked before a model is built: a GPU device on a machine without one is a
config mistake, not a "Found no NVIDIA driver" traceback from inside build_model."""
import torch

from ..errors import InputValueError

__all__ = ["check_device"]


def check_device(device: str) -> None:
    """Refuse a device string torch does not know, or a CUDA device where CUDA is unavailable."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputValueError(f"MODEL.DEVICE '{device}' is not a device torch knows: use 'cpu' or 'cuda'") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputValueError(
            f"MODEL.DEVICE '{device}' but this machine has no usable GPU (torch.cuda.is_available() is False): "
            "add MODEL.DEVICE cpu to the command line"
        )
