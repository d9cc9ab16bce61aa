"""Shared fixtures: one emulated AWS per test session, fresh names per test.

``local_stack`` starts moto's server in a thread on a free port with the resources of
template.yaml (devstack.LocalStack, the same code as ``make run``), and points this
process's AWS clients at it for the session. All tests share that one server, so each
test works under names of its own: the ``domain`` fixture is a new random domain.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import settings
from mailcore.settings import Settings
from mailcore.store import Store

from devstack.stack import DEFAULT_TEMPLATE, LocalStack, StackInfo, local_function_environment

# Tests assert behaviour, never wall-clock time: Hypothesis' per-example deadline fails
# at random on two loaded cores, so it is off for every property test.
settings.register_profile("no-deadline", deadline=None)
settings.load_profile("no-deadline")

#: Every client of the session's gateway is 127.0.0.1, and many tests fail logins on
#: purpose: the session's AuthFunction counts failures (its requests are the cloud's) but
#: never delays or refuses. The throttle's own tests run a policy of their own
#: (tests/unit/test_throttle.py, tests/integration/test_auth_throttle.py).
_SESSION_THROTTLE = {
    "THROTTLE_ADDRESS_FREE": "1000000",
    "THROTTLE_ADDRESS_LIMIT": "1000000",
    "THROTTLE_ACCOUNT_FREE": "1000000",
    "THROTTLE_ACCOUNT_LIMIT": "1000000",
}

#: Variables that would send a test's clients somewhere else than the local stack.
_FOREIGN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "MAIL_STACK", "MAIL_STACK_FILE")


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The emulated AWS with template.yaml's resources; its environment is applied for the session."""
    stack = LocalStack(
        DEFAULT_TEMPLATE,
        port=0,
        stack_file=tmp_path_factory.mktemp("local") / "stack.json",
        function_environment={**local_function_environment(), **_SESSION_THROTTLE},
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in _FOREIGN_AWS_VARIABLES:
            patch.delenv(name, raising=False)
        info = stack.start()
        try:
            for name, value in info.process_environment.items():
                patch.setenv(name, value)
            yield info
        finally:
            stack.stop()


@pytest.fixture
def store(local_stack: StackInfo) -> Store:
    """The storage the functions use, on the session's emulated AWS."""
    return Store.build(Settings.from_env(local_stack.environment))


@pytest.fixture
def domain(store: Store) -> str:
    """A new domain, unique to this test: ``t<hex>.test``."""
    return store.accounts.add_domain(f"t{secrets.token_hex(6)}.test")
