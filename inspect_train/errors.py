"""One exception type for problems in what the user gave us.

The CLI prints an InputError as a single line and exits with code 2, so every
module can refuse bad input without knowing how the error reaches the user.
"""


class InputError(Exception):
    """Bad user input (a missing file, a size mismatch, too few images...)."""


EXIT_INPUT_ERROR = 2
