"""A dataset mapper wrapper that names the file it could not read.

Why: PIL's "Truncated File Read" or "cannot identify image file <_io.BytesIO ...>" from deep inside a
data loader names no file, so a user with one broken image in 100k cannot find it.
"""
from PIL import UnidentifiedImageError

from ...errors import InputError, InputValueError

__all__ = ["NameUnreadableFiles"]


class NameUnreadableFiles:
    """Calls `mapper`; an image or annotation file that cannot be read becomes one InputValueError
    naming the file and the fix. Attributes are the wrapped mapper's."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except InputError:
            raise
        except (OSError, UnidentifiedImageError, SyntaxError) as e:  # PIL raises SyntaxError for some bad PNGs
            files = [dataset_dict[k] for k in ("file_name", "pan_seg_file_name", "sem_seg_file_name")
                     if dataset_dict.get(k)]
            raise InputValueError(
                f"cannot read {' or '.join(files) or 'an image'} ({type(e).__name__}: {e}): the file is missing, "
                "truncated or not an image; re-create it or remove its record from the dataset"
            ) from e

    def __getattr__(self, name):
        # Only called for names the wrapper lacks; "mapper" and dunders are its own, so that pickle
        # and deepcopy (loader workers started by spawn) see a plain object, not a recursion.
        if name == "mapper" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.mapper, name)
