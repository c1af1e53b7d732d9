"""The project's one error type for problems a user can fix."""


class SmartShelfError(Exception):
    """Its message is one clear line (optionally followed by a log tail); the CLI prints it without a traceback."""
