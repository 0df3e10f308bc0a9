"""One exception type for every user-facing failure.

The CLI prints ``error: <message>`` and exits with status 2, so each message is a single line that names the
file or field and says what was expected.
"""


class QDMError(Exception):
    """A user-facing error with a one-line message."""
