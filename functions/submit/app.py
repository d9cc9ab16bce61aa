"""SubmitFunction: messages authenticated users submit on ports 587/465 (RFC 6409)."""

from mailcore.lambda_app import make_handler
from mailcore.submission import OPERATIONS

lambda_handler = make_handler("submit", OPERATIONS)
