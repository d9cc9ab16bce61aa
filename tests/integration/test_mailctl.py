"""mailctl, driven through ``main([...])`` on the session's emulated AWS.

Every test works in a domain of its own (the ``domain`` fixture). Exit codes: 0 done,
1 refused (``mailctl: error: ...``), 2 usage.
"""

from __future__ import annotations

import io
import json
import secrets

import boto3
import pytest
import yaml
from mailcore.errors import AuthenticationFailed

from devstack.stack import DEFAULT_TEMPLATE
from devstack.template import Resolver, load_template
from mailctl.cli import main
from mailctl.resources import RESOURCE_VARIABLES, STACK_OUTPUTS

PASSWORD = "Tr0ub4dor&3-horse"


def run(capsys, *argv: str) -> tuple[int, list[str], str]:
    """Exit code, stdout lines, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err


def refused(capsys, *argv: str) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, []), err
    assert err.startswith("mailctl: error: ") and err.count("\n") == 1
    return err


@pytest.fixture
def user(capsys, domain) -> str:
    address = f"u{secrets.token_hex(3)}@{domain}"
    assert run(capsys, "user", "add", address, "--password", PASSWORD)[0] == 0
    return address


# -- domains -------------------------------------------------------------------------


def test_domain_add_list_remove(capsys, local_stack):
    name = f"d{secrets.token_hex(4)}.test"
    # WHEN a domain is added, in any case
    assert run(capsys, "domain", "add", name.upper()) == (0, [], "")
    # THEN it is listed, normalized, one domain a line
    code, domains, _ = run(capsys, "domain", "list")
    assert code == 0 and name in domains and domains == sorted(domains)
    # WHEN it is removed THEN it is gone
    assert run(capsys, "domain", "remove", name)[0] == 0
    assert name not in run(capsys, "domain", "list")[1]


def test_domain_errors(capsys, user, domain):
    assert "exists" in refused(capsys, "domain", "add", domain)
    assert "malformed domain" in refused(capsys, "domain", "add", "not a domain!")
    assert "still has users" in refused(capsys, "domain", "remove", domain)
    assert "no domain" in refused(capsys, "domain", "remove", "never-added.test")


def test_catchall_set_show_and_clear(capsys, user, domain):
    # WHEN the catch-all is set by local part
    assert run(capsys, "domain", "catchall", domain, user.split("@")[0]) == (0, [], "")
    # THEN it is shown as an address
    assert run(capsys, "domain", "catchall", domain)[1] == [user]
    # WHEN it is turned off THEN there is none
    assert run(capsys, "domain", "catchall", domain, "--off")[0] == 0
    assert run(capsys, "domain", "catchall", domain)[1] == []
    # AND only existing users of existing domains can be a catch-all
    assert "no user" in refused(capsys, "domain", "catchall", domain, f"nobody@{domain}")
    assert "no domain" in refused(capsys, "domain", "catchall", "never-added.test")


# -- users ---------------------------------------------------------------------------


def test_user_add_then_list_and_authenticate(capsys, store, domain):
    address = f"alice@{domain}"
    # WHEN a user is added with a mixed-case address
    code, out, err = run(capsys, "user", "add", f"Alice@{domain.upper()}", "--password", PASSWORD)
    # THEN it succeeds silently, the password appears nowhere
    assert (code, out, err) == (0, [], "")
    # AND the user is listed and can log in, with its mailboxes made
    assert run(capsys, "user", "list", domain)[1] == [address]
    assert store.accounts.authenticate(address, PASSWORD) == address
    assert store.mailboxes.get(address, "INBOX").name == "INBOX"


def test_user_add_reads_the_password_from_stdin(capsys, monkeypatch, store, domain):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n"))
    code, out, err = run(capsys, "user", "add", f"bob@{domain}", "--password-stdin")
    assert code == 0 and PASSWORD not in "".join(out) + err
    assert store.accounts.authenticate(f"bob@{domain}", PASSWORD)


def test_user_add_prompts_twice_for_the_password(capsys, monkeypatch, store, domain):
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    # WHEN the two answers agree THEN the user is made
    assert run(capsys, "user", "add", f"carol@{domain}") == (0, [], "")
    assert store.accounts.authenticate(f"carol@{domain}", PASSWORD)
    # WHEN they differ THEN nothing is made
    assert "do not match" in refused(capsys, "user", "add", f"dave@{domain}")
    assert run(capsys, "user", "list", domain)[1] == [f"carol@{domain}"]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        pytest.param("no-at-sign", "malformed address", id="malformed-address"),
        pytest.param("a b@{domain}", "malformed local part", id="malformed-local-part"),  # RFC 5321 §4.1.2
        pytest.param("someone@never-added.test", "no domain", id="unknown-domain"),
        pytest.param("x+tag@{domain}", "subaddress", id="subaddress-is-not-a-user"),  # RFC 5233
    ],
)
def test_user_add_refusals(capsys, domain, address, why):
    assert why in refused(capsys, "user", "add", address.format(domain=domain), "--password", PASSWORD)


def test_duplicate_user_is_refused(capsys, user):
    err = refused(capsys, "user", "add", user.upper(), "--password", "other")
    assert "exists" in err and "other" not in err


def test_empty_password_is_refused(capsys, monkeypatch, domain):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert "empty password" in refused(capsys, "user", "add", f"e@{domain}", "--password-stdin")


def test_user_passwd(capsys, store, user):
    # WHEN the password is changed THEN only the new one works
    assert run(capsys, "user", "passwd", user, "--password", "new-" + PASSWORD) == (0, [], "")
    assert store.accounts.authenticate(user, "new-" + PASSWORD) == user
    with pytest.raises(AuthenticationFailed):
        store.accounts.authenticate(user, PASSWORD)
    assert "no user" in refused(capsys, "user", "passwd", "ghost@" + user.split("@")[1], "--password", "x")


def test_user_remove_takes_the_mailboxes_along(capsys, store, user, domain):
    assert run(capsys, "user", "remove", user) == (0, [], "")
    assert run(capsys, "user", "list", domain)[1] == []
    assert "no user" in refused(capsys, "user", "remove", user)


def test_user_list_of_an_unknown_domain_is_an_error(capsys, local_stack):
    assert "no domain" in refused(capsys, "user", "list", "never-added.test")


# -- aliases -------------------------------------------------------------------------


def test_alias_add_list_remove(capsys, store, user, domain):
    other = f"v{secrets.token_hex(3)}@{domain}"
    store.add_user(other, PASSWORD)
    # WHEN an alias to two users is added
    assert run(capsys, "alias", "add", f"team@{domain}", user, other) == (0, [], "")
    # THEN it is listed as in aliases(5), and resolves to both
    assert run(capsys, "alias", "list", domain)[1] == [f"team@{domain}: {', '.join(sorted([user, other]))}"]
    assert sorted(store.accounts.resolve(f"team@{domain}").users) == sorted([user, other])
    # WHEN it is removed THEN it is gone
    assert run(capsys, "alias", "remove", f"team@{domain}")[0] == 0
    assert run(capsys, "alias", "list", domain)[1] == []
    assert "no alias" in refused(capsys, "alias", "remove", f"team@{domain}")


def test_alias_refusals(capsys, user, domain):
    assert "exists" in refused(capsys, "alias", "add", user, user)  # may not shadow a user
    assert "no user" in refused(capsys, "alias", "add", f"list@{domain}", f"ghost@{domain}")
    assert "no domain" in refused(capsys, "alias", "list", "never-added.test")


# -- usage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="nothing"),
        pytest.param(["frobnicate"], id="unknown-object"),
        pytest.param(["user"], id="no-action"),
        pytest.param(["user", "add"], id="no-address"),
        pytest.param(["user", "add", "a@b.test", "--password", "x", "--password-stdin"], id="two-password-sources"),
        pytest.param(["alias", "add", "a@b.test"], id="alias-without-target"),
        pytest.param(["domain", "catchall", "b.test", "u", "--off"], id="catchall-user-and-off"),
    ],
)
def test_bad_usage_exits_2(capsys, argv):
    code = main(argv)
    assert code == 2
    assert "usage: mailctl" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "domain" in capsys.readouterr().out


# -- where mailctl finds the mail system ---------------------------------------------


@pytest.fixture
def no_resource_environment(monkeypatch, tmp_path):
    """Neither the functions' variables nor a stack file in reach (endpoint kept: it is the 'cloud')."""
    for name in RESOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_local_stack_file_gives_resources_and_endpoint(capsys, monkeypatch, local_stack, domain, no_resource_environment):
    # GIVEN only the stack file of a running local stack, and no endpoint in the environment
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("MAIL_STACK_FILE", str(local_stack.stack_file))
    # WHEN / THEN mailctl reaches it
    assert run(capsys, "domain", "list")[1].count(domain) == 1


def test_the_stack_file_is_found_in_a_parent_directory(capsys, monkeypatch, local_stack, domain, tmp_path):
    for name in (*RESOURCE_VARIABLES, "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.json").write_text(local_stack.stack_file.read_text())
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    assert domain in run(capsys, "domain", "list")[1]


def test_without_any_mail_system_it_says_where_it_looked(capsys, no_resource_environment):
    assert "no mail system found" in refused(capsys, "domain", "list")


def test_a_missing_stack_file_is_an_error(capsys, monkeypatch, no_resource_environment, tmp_path):
    monkeypatch.setenv("MAIL_STACK_FILE", str(tmp_path / "nope.json"))
    assert "does not exist" in refused(capsys, "domain", "list")


def test_an_incomplete_environment_is_an_error(capsys, monkeypatch, local_stack):
    monkeypatch.delenv("MAIL_BUCKET")
    assert "MAIL_BUCKET" in refused(capsys, "domain", "list")


def test_stack_outputs_name_what_the_functions_get():
    # The Outputs mailctl reads carry the same values as the functions' variables.
    template = load_template(DEFAULT_TEMPLATE)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    for output, variable in STACK_OUTPUTS.items():
        assert template["Outputs"][output]["Value"] == variables[variable], output


def test_a_cloudformation_stack_gives_the_resources(capsys, local_stack, domain, no_resource_environment):
    # GIVEN a deployed stack (on moto) whose Outputs are template.yaml's, resolved
    template = load_template(DEFAULT_TEMPLATE)
    resolver = Resolver(template, physical=dict(local_stack.resources))
    outputs = {key: {"Value": resolver.resolve(template["Outputs"][key]["Value"])} for key in STACK_OUTPUTS}
    name = f"mail-{secrets.token_hex(4)}"
    # (a resource of a type the local stack does not create, so it cannot disturb test_devstack)
    marker = {"Type": "AWS::SSM::Parameter", "Properties": {"Name": name, "Type": "String", "Value": "mail"}}
    body = {"Resources": {"Marker": marker}, "Outputs": outputs}
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName=name, TemplateBody=yaml.safe_dump(body))
    try:
        # WHEN mailctl is pointed at it THEN it administers the same tables
        assert domain in run(capsys, "--stack", name, "domain", "list")[1]
        assert domain in run(capsys, "domain", "list", "--stack", name)[1]
        # AND an unknown stack is an error, not a traceback
        assert "does not exist" in refused(capsys, "--stack", "no-such-stack", "domain", "list")
    finally:
        cloudformation.delete_stack(StackName=name)


def test_stack_file_content_is_what_mailctl_needs(local_stack):
    described = json.loads(local_stack.stack_file.read_text())
    assert described["endpoint"] == local_stack.endpoint
    assert all(described["environment"][name] for name in RESOURCE_VARIABLES)
