"""The one exception type for bad input: the CLI prints its message as one line, no traceback."""


class DiffzooError(Exception):
    """A problem with the user's input (params, files, weights) that the message explains."""
