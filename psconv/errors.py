"""The one exception type users see for bad input.

Every check in psconv that rejects user input raises :class:`PsconvError` (a ``ValueError``)
with a message naming the field or layer, the offending value and what is allowed, so the CLI
can print it as one line instead of a traceback.
"""


class PsconvError(ValueError):
    """Bad input: the message names what is wrong, the value, and what is allowed."""
