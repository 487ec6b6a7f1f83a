"""The one exception type for user errors: the command line prints it as one line and exits non-zero."""


class RaeditError(Exception):
    """A problem with the user's input (a name, a path, a shape, a config key), not a bug in raedit."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none (for one-line errors)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
