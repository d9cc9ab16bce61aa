"""No code path hands a password to a logger (issue #7: "git grep finds no code path
that logs a password"). The source of gateway/, layers/ and functions/ is read with
``ast``: a logging call (``log.info(...)``, ``logger.exception(...)``, ``logging.warning(...)``)
whose arguments name a password, a secret or credentials, as a variable, an attribute,
a keyword or a subscript key, fails the test. Message texts may say "password"; only
values are suspects.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.commandlog import summarize

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("gateway", "layers", "functions")
LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"}
LOGGERS = re.compile(r"(?:^|_)(?:log|logger|logging)$", re.IGNORECASE)
SUSPECT = re.compile(r"passw(?:or)?d|passwd|secret|credential", re.IGNORECASE)


def _is_logging_call(node: ast.Call) -> bool:
    func = node.func
    if not isinstance(func, ast.Attribute) or func.attr not in LEVELS:
        return False
    owner = func.value
    name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
    return bool(LOGGERS.search(name))


def _suspects(node: ast.Call) -> list[str]:
    """The names among the call's arguments that look like credentials."""
    found = []
    values: list[ast.AST] = [*node.args, *(k.value for k in node.keywords)]
    found += [k.arg for k in node.keywords if k.arg and SUSPECT.search(k.arg)]
    for value in values:
        for sub in ast.walk(value):
            if isinstance(sub, ast.Name) and SUSPECT.search(sub.id):
                found.append(sub.id)
            elif isinstance(sub, ast.Attribute) and SUSPECT.search(sub.attr):
                found.append(sub.attr)
            elif isinstance(sub, ast.keyword) and sub.arg and SUSPECT.search(sub.arg):
                found.append(sub.arg)
            elif isinstance(sub, ast.Subscript | ast.Dict):
                keys = [sub.slice] if isinstance(sub, ast.Subscript) else [k for k in sub.keys if k is not None]
                for key in keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str) and SUSPECT.search(key.value):
                        found.append(repr(key.value))
    return found


def offences(source: str, filename: str = "<test>") -> list[str]:
    tree = ast.parse(source, filename)
    return [
        f"{filename}:{node.lineno}: {', '.join(names)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _is_logging_call(node) and (names := _suspects(node))
    ]


def python_files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py") if ".aws-sam" not in p.parts)


def test_no_logging_call_is_given_a_credential() -> None:
    files = python_files()
    assert len(files) > 20  # the walk found the code
    found = [o for p in files for o in offences(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'log.info("login %s %s", user, password)',
        'logger.debug("x", extra={"password": p})',
        'self.log.warning(f"auth {credentials}")',
        'log.error("%s", request.password)',
        'logging.exception("%r", event["password"])',
        'log.info("%s", secret_arn)',
    ],
)
def test_the_check_finds_what_it_looks_for(source: str) -> None:
    assert offences(source)


@pytest.mark.parametrize(
    "source",
    [
        'log.info("AUTH %s failed: wrong password", mechanism)',
        "print(password)",
        'log.info("%s", user)',
    ],
)
def test_the_check_leaves_innocent_calls_alone(source: str) -> None:
    assert not offences(source)


@pytest.mark.parametrize(
    ("verb", "argument", "shown"),
    [
        ("PASS", "hunter2", "***"),
        ("USER", "alice", "***"),
        ("LOGIN", 'alice "hunter2"', "***"),
        ("AUTH", "PLAIN AGFsaWNlAGh1bnRlcjI=", "PLAIN ***"),
        ("AUTH", "login", "LOGIN"),
        ("AUTHENTICATE", "hunter2", "?"),  # credentials without a mechanism
        ("HEADER:", "Basic YWxpY2U6aHVudGVyMg==", "***"),
        ("MAIL", "FROM:<a@example.org>", "FROM:<a@example.org>"),
        ("NOOP", "x" * 200, "x" * 80),
        ("RSET", "", ""),
    ],
)
def test_the_command_log_shows_no_credentials(verb: str, argument: str, shown: str) -> None:
    assert summarize(verb, argument) == shown
