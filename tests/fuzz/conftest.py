"""The conversation fuzz talks to the same running gateway as tests/integration."""

from tests.integration.conftest import function_transport, gateway, user  # noqa: F401
