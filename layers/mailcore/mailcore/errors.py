"""Domain errors. Each carries a code that every protocol knows how to render.

The codes are RFC 5530 response codes where one fits; the gateway maps them to
SMTP reply codes, POP3 ``-ERR [..]`` and IMAP ``NO [..]``.
"""

from __future__ import annotations


class MailError(Exception):
    """A user error: the request was understood and refused."""

    code = "CANNOT"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code:
            self.code = code


class NotFound(MailError):
    """No such object."""

    code = "NONEXISTENT"


class AlreadyExists(MailError):
    """The object already exists."""

    code = "ALREADYEXISTS"


class AuthenticationFailed(MailError):
    """Wrong user name or password."""

    code = "AUTHENTICATIONFAILED"


class InvalidInput(MailError):
    """Malformed input."""

    code = "CLIENTBUG"


class PermissionDenied(MailError):
    """Not allowed for this principal."""

    code = "NOPERM"


class InUse(MailError):
    """The object is locked by another session."""

    code = "INUSE"
