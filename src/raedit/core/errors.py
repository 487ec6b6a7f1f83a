"""The one exception type for user errors: the command line prints it as one line and exits non-zero."""


class RaeditError(Exception):
    """A problem with the user's input (a name, a path, a shape, a config key), not a bug in raedit."""
