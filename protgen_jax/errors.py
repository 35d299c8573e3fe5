"""Errors raised on bad user input, before anything is traced."""


class DataError(ValueError):
    """A user-supplied file or argument is unusable.

    The message names the file, the record (line, sequence id or chain) and what is wrong, so the command line
    can print it as a one-line reason and exit non-zero.
    """


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became non-finite); the message says what to do.

    Raised after the last good checkpoint is safe; the command line prints it and exits with 1.
    """
