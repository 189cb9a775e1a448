"""Where a payload problem sits and what it is: the fields both sides' payload errors carry.

The worker's codec raises ``CodecError`` and the host maps it to the public
``snakepit.errors.PayloadError``; both name the value's path and type the
same way, from this one definition. No imports: ``snakepit.errors`` (the
bottom of the host side) builds on it without loading the protocol.
"""

from __future__ import annotations


class PayloadFields(Exception):
    """An exception that names a value's path (``args["x"]``) and type name (``"set"``)."""

    def __init__(
        self, message: str, *, path: str | None = None, type_name: str | None = None
    ) -> None:
        super().__init__(message)
        #: Where the value sits: ``args["x"]``, ``result["a"][3]`` (None when unknown).
        self.path = path
        #: The qualified name of its type: ``"set"``, ``"datetime.datetime"`` (or None).
        self.type_name = type_name
