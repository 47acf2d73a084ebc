"""One exception type for problems in what the user gave us.

The CLI prints an InputError as a single line and exits with code 2, so every
module can refuse bad input without knowing how the error reaches the user.
"""


class InputError(Exception):
    """Bad user input (a missing file, a size mismatch, too few images...)."""


class ResumeRefused(InputError):
    """A stopped run that cannot be continued here. `reason` says why; the remedy depends on who resumed it
    (a gan command: another --out or no --resume; a task's generator cache: another --generators folder)."""

    def __init__(self, reason: str, remedy: str = "start a new --out or drop --resume"):
        super().__init__(f"{reason} ({remedy})")
        self.reason = reason


EXIT_INPUT_ERROR = 2
