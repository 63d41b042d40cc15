"""The one error the converter raises: what is wrong, and where in the project JSON."""

from __future__ import annotations


class ConversionError(ValueError):
    """A project that cannot be converted for the requested target.

    Raised both for malformed parts (a missing key, a wrong type, a number out
    of range, a reference to nothing) and for parts the target simulator does
    not support. ``path`` names the offending part the way a user finds it in
    the JSON (``input_json.zoneManager.zones[2].materialUuid``), so an API can
    answer 400 with it and the user can fix the project.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
