"""The base of the errors a user can act on: the message names the problem; the CLI prints it, exit code 2."""


class RoomboxError(Exception):
    """An error with a message that names the file, key or device at fault and the reason."""
