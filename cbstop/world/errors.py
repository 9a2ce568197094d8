"""The one error a world load raises, from reading, checking or writing alike."""


class WorldError(Exception):
    """A world file that cannot be loaded; the message names the offending entry."""
