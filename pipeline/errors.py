"""The one exception type users see.

Every failure a user can fix (bad checksum, corrupt model, empty calibration folder, unknown
model name...) is raised as :class:`PosezooError` with a one-line message that names the file and
says what to do. The CLI prints ``error: <message>`` and exits 2 instead of a traceback, so errors
from deep inside TensorFlow never reach the user unexplained.
"""

from __future__ import annotations


class PosezooError(Exception):
    """A user-fixable failure; ``str(err)`` is a single line naming the file and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
