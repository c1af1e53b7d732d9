"""The project's one error type for problems a user can fix."""


class SmartShelfError(Exception):
    """Its message is one clear line (optionally followed by a log tail); the CLI prints it without a traceback."""


class Unavailable(SmartShelfError):
    """A server did not answer, or did not take a request, in time: waiting and trying again may fix it."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line for a user (its first), or its type's name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
