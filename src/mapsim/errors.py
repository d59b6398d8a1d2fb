"""Errors a user can cause and fix (bad input, impossible parameters).

The CLI prints these as one line, without a traceback, and exits non-zero.
Anything else is a bug and keeps its traceback.
"""


class MapsimError(Exception):
    """A problem with the user's input: a file, a parameter or their combination.

    The message names the input, what was expected and what was found.
    """
