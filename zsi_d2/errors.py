"""Errors that mean "your input is wrong", which `train_net.py` reports in one line.

Why: a mistake in a config, a file or a dataset name deserves a sentence that names the thing and
the fix, not a traceback after a 400-line config dump. Each class is also the builtin error a
caller would expect (a missing file is still a FileNotFoundError), so `except ValueError` keeps
working; `train_net.py` catches `InputError` at the top and exits with status 2.
"""

__all__ = [
    "InputError",
    "InputValueError",
    "InputKeyError",
    "InputFileNotFoundError",
    "CheckpointMismatchError",
    "LeakageError",
    "EXIT_INPUT_ERROR",
    "format_input_error",
    "exit_on_input_error",
]

import contextlib
import sys

# Exit status of train_net.py on a known input error (argparse uses 2 for usage errors too).
EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """A mistake in the user's input that the message fully explains."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputValueError(InputError, ValueError):
    pass


class InputKeyError(InputError, KeyError):
    pass


class InputFileNotFoundError(InputError, FileNotFoundError):
    pass


class CheckpointMismatchError(InputValueError):
    """MODEL.WEIGHTS does not fit the model the config builds (or is not fair to start from)."""


class LeakageError(InputError, RuntimeError):
    """A training set holds labels of unseen classes."""


def format_input_error(error: InputError) -> str:
    """For a terminal: the message's detail lines first, then 'ERROR: <first line>' last, where a
    reader looks. Messages put a self-contained summary (what is wrong, the fix) on their first line."""
    first, *details = str(error).splitlines() or [""]
    return "\n".join(details + [f"ERROR: {first}"])


@contextlib.contextmanager
def exit_on_input_error():
    """A command's top level: within the block an InputError ends the program with its one-line
    message on stderr and exit status 2, instead of a traceback."""
    try:
        yield
    except InputError as e:
        print(format_input_error(e), file=sys.stderr)
        raise SystemExit(EXIT_INPUT_ERROR) from None
