"""The one error type a user sees: one sentence naming the variable, the cell and the reason."""


class ShipError(Exception):
    """An export was refused or failed; ``str()`` is the message for the user."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output  # e.g. the failing test output of a verify step
