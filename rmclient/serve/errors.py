"""What the server answers a request it refuses: an HTTP status and a JSON error body."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import RMClientError


class RequestError(RMClientError):
    """A request the server rejects: an HTTP ``status`` and a JSON error body."""

    def __init__(
        self, status: int, message: str, *, kind: str = "invalid_request",
        index: Optional[int] = None, field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.index = index
        self.field = field

    def body(self) -> Dict[str, Any]:
        """``{"error": {"message", "type", "code"[, "index"][, "field"]}}``."""
        err: Dict[str, Any] = {"message": self.message, "type": self.kind, "code": self.status}
        if self.index is not None:
            err["index"] = self.index
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


def invalid(index: int, field: str, message: str) -> RequestError:
    """A 400 naming the sample ``index`` and ``field`` at fault."""
    return RequestError(
        400, f"sample {index}, field {field!r}: {message}", kind="invalid_sample", index=index, field=field
    )
