"""The real-name verification port: does this name belong to this ID number?"""

from __future__ import annotations

from typing import Protocol


class RealnameRejected(Exception):
    """The service answered: the name and the ID number do not belong together (or the ID is not
    on file). `reason` is a Chinese sentence fit to show the patient."""

    def __init__(self, reason: str = "姓名与证件号码不一致"):
        self.reason = reason
        super().__init__(reason)


class RealnameUnavailable(Exception):
    """The service did not answer or failed; nothing is known. We do not retry for the patient."""


class RealnameVerifier(Protocol):
    def verify(self, *, name: str, id_type: str, id_number: str) -> None:
        """Return if the identity checks out; raise RealnameRejected or RealnameUnavailable."""
        ...
