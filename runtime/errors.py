"""The evaluation's one error type for bad user input."""


class InputError(ValueError):
    """Bad user input (missing file, not an annotation file, ...): one line on stderr, exit code 2."""
