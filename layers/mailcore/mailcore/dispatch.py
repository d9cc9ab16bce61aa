"""What every handler does: event -> request -> operation -> JSON result.

User errors become ``{"ok": false, "error": code, "message": ...}`` plus the error's
details (a throttled login's ``retry_after``); anything else propagates, so Lambda
reports a function error and the gateway answers with a temporary failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mailcore.contracts import ContractError, Request, parse_request
from mailcore.errors import MailError

Operation = Callable[[Any, Any], dict[str, Any]]


def dispatch(
    event: Any, operations: Mapping[type[Request], Operation], store_factory: Callable[[], Any]
) -> dict[str, Any]:
    try:
        request = parse_request(event, tuple(operations))
    except ContractError as error:
        return {"ok": False, "error": "CLIENTBUG", "message": str(error)}
    try:
        result = operations[type(request)](store_factory(), request)
    except MailError as error:
        return {**error.details, "ok": False, "error": error.code, "message": str(error)}
    return {"ok": True, **result}
