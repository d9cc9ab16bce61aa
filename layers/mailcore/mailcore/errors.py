"""Domain errors. Each carries a code that every protocol knows how to render.

The codes are RFC 5530 response codes where one fits; the gateway maps them to
SMTP reply codes, POP3 ``-ERR [..]`` and IMAP ``NO [..]``.
"""

from __future__ import annotations

from typing import Any


class MailError(Exception):
    """A user error: the request was understood and refused. ``details`` go into the
    result beside the code (say, how long to wait)."""

    code = "CANNOT"

    def __init__(self, message: str = "", code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code:
            self.code = code
        self.details = dict(details or {})


class NotFound(MailError):
    """No such object."""

    code = "NONEXISTENT"


class AlreadyExists(MailError):
    """The object already exists."""

    code = "ALREADYEXISTS"


class AuthenticationFailed(MailError):
    """Wrong user name or password."""

    code = "AUTHENTICATIONFAILED"


class Throttled(MailError):
    """Too many failed logins: refused without checking the password (``retry_after``).

    Not an RFC 5530 code: each protocol answers it with its own "try again later"
    (SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP])."""

    code = "THROTTLED"


class InvalidInput(MailError):
    """Malformed input."""

    code = "CLIENTBUG"


class PermissionDenied(MailError):
    """Not allowed for this principal."""

    code = "NOPERM"


class InUse(MailError):
    """The object is locked by another session."""

    code = "INUSE"
