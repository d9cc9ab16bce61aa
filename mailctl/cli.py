"""mailctl: administer domains, users and aliases of the mail system.

    mailctl domain add|list|remove [NAME]
    mailctl domain catchall DOMAIN [USER | --off]
    mailctl user add ADDRESS [--password P | --password-stdin]
    mailctl user passwd ADDRESS [--password P | --password-stdin]
    mailctl user list DOMAIN
    mailctl user remove ADDRESS
    mailctl alias add ALIAS TARGET [TARGET ...]
    mailctl alias list DOMAIN
    mailctl alias remove ALIAS
    mailctl dkim create DOMAIN [--selector S] [--bits N] [--force]
    mailctl dkim show DOMAIN

List commands print one item per line; other commands print nothing when they succeed.
A refused request (malformed address, unknown domain, duplicate user, not found) prints
``mailctl: error: <why>`` and exits 1; a usage error exits 2. Where the tables are is
explained in :mod:`mailctl.resources`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError
from mailcore import dkim
from mailcore.addresses import normalize_domain
from mailcore.errors import AlreadyExists, InvalidInput, MailError, NotFound
from mailcore.store import Store

from mailctl.resources import StackNotFound, Target, locate

Command = Callable[[Store, argparse.Namespace, TextIO], None]

PROG = "mailctl"


# -- commands ----------------------------------------------------------------------


def _require_domain(store: Store, domain: str) -> dict[str, Any]:
    """The domain's item; listing an unknown domain is an error, not an empty list."""
    name = normalize_domain(domain)
    for item in store.accounts.list_domains():
        if item["domain"] == name:
            return item
    raise NotFound(f"no domain {name}")


def domain_add(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.accounts.add_domain(args.name)


def domain_list(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    for item in sorted(store.accounts.list_domains(), key=lambda i: i["domain"]):
        print(item["domain"], file=out)


def domain_remove(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.accounts.remove_domain(args.name)


def domain_catchall(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    """Set, clear (``--off``) or show the user that receives mail for unknown local parts."""
    if args.off:
        store.accounts.set_catchall(args.domain, None)
    elif args.user:
        # A bare local part means a user of this domain.
        user = args.user if "@" in args.user else f"{args.user}@{args.domain}"
        store.accounts.set_catchall(args.domain, user)
    else:
        catchall = _require_domain(store, args.domain).get("catchall")
        if catchall:
            print(catchall, file=out)


def read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    """``--password``, one line of standard input (``--password-stdin``), or asked twice on the terminal."""
    if args.password is not None:
        password = str(args.password)
    elif args.password_stdin:
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Retype password: ") != password:
            raise InvalidInput("the passwords do not match")
    if not password:
        raise InvalidInput("empty password")
    return password


def user_add(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.add_user(args.address, read_password(args, sys.stdin))


def user_passwd(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.accounts.set_password(args.address, read_password(args, sys.stdin))


def user_list(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    _require_domain(store, args.domain)
    for address in sorted(store.accounts.list_users(args.domain)):
        print(address, file=out)


def user_remove(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.remove_user(args.address)


def alias_add(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.accounts.add_alias(args.alias, args.targets)


def alias_list(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    """One alias a line, as in aliases(5): ``alias@domain: target, target``."""
    _require_domain(store, args.domain)
    for alias in sorted(store.accounts.list_aliases(args.domain), key=lambda a: a["address"]):
        print(f"{alias['address']}: {', '.join(alias['targets'])}", file=out)


def alias_remove(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    store.accounts.remove_alias(args.alias)


def _dkim_keys(store: Store, args: argparse.Namespace) -> dkim.DkimKeys:
    path = store.settings.dkim_parameter_path
    if not path:
        raise InvalidInput("the DKIM parameter path is unknown (DKIM_PARAMETER_PATH, or the stack output DkimParameterPath)")
    return dkim.DkimKeys(args.target.clients.get("ssm"), path)


def dkim_create(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    """A new key for a served domain, stored as a SecureString; prints the TXT record to publish."""
    domain = _require_domain(store, args.domain)["domain"]
    keys = _dkim_keys(store, args)
    if not args.force and keys.get(domain) is not None:
        raise AlreadyExists(f"{domain} has a DKIM key; --force replaces it (publish the new record first)")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", args.selector):
        raise InvalidInput(f"malformed selector {args.selector!r}")
    key = dkim.generate_key(domain, args.selector, args.bits)
    name = keys.put(key, overwrite=args.force)
    print(f"# DKIM key of {domain} stored in SSM parameter {name}; publish this record:", file=sys.stderr)
    print(dkim.zone_line(key), file=out)


def dkim_show(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    """The TXT record of a domain's stored key."""
    domain = normalize_domain(args.domain)
    key = _dkim_keys(store, args).get(domain)
    if key is None:
        raise NotFound(f"{domain} has no DKIM key")
    print(dkim.zone_line(key), file=out)


# -- parser ------------------------------------------------------------------------


def _password_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--password", help="the password (visible to other local users in ps; prefer a prompt)")
    source.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer domains, users and aliases of the serverless mail system.",
        epilog="Resources: --stack NAME, else ACCOUNTS_TABLE/... variables, else $MAIL_STACK, "
        "else the running local stack's .local/stack.json ($MAIL_STACK_FILE).",
    )
    stack_help = "CloudFormation stack whose Outputs name the resources"
    parser.add_argument("--stack", help=stack_help)
    # Also accepted after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack", default=argparse.SUPPRESS, help=stack_help)
    objects = parser.add_subparsers(dest="object", required=True, metavar="{domain,user,alias,dkim}")

    def command(group: Any, name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    domain = objects.add_parser("domain", help="mail domains").add_subparsers(dest="action", required=True)
    command(domain, "add", domain_add, "serve mail for a domain").add_argument("name")
    command(domain, "list", domain_list, "list the domains, one a line")
    command(domain, "remove", domain_remove, "stop serving a domain (it must have no users or aliases)").add_argument(
        "name"
    )
    catchall = command(domain, "catchall", domain_catchall, "show, set or clear the catch-all user of a domain")
    catchall.add_argument("domain")
    target = catchall.add_mutually_exclusive_group()
    target.add_argument("user", nargs="?", help="user receiving mail for unknown local parts (address or local part)")
    target.add_argument("--off", action="store_true", help="refuse mail for unknown local parts")

    user = objects.add_parser("user", help="users (mailboxes)").add_subparsers(dest="action", required=True)
    add = command(user, "add", user_add, "add a user with INBOX and the special-use mailboxes")
    add.add_argument("address")
    _password_options(add)
    passwd = command(user, "passwd", user_passwd, "set a user's password")
    passwd.add_argument("address")
    _password_options(passwd)
    command(user, "list", user_list, "list the users of a domain, one a line").add_argument("domain")
    command(user, "remove", user_remove, "remove a user with all its mailboxes and messages").add_argument("address")

    alias = objects.add_parser("alias", help="aliases to one or more users").add_subparsers(dest="action", required=True)
    add_alias = command(alias, "add", alias_add, "deliver mail for an address to existing users")
    add_alias.add_argument("alias")
    add_alias.add_argument("targets", nargs="+", metavar="TARGET")
    command(alias, "list", alias_list, "list the aliases of a domain, one a line").add_argument("domain")
    command(alias, "remove", alias_remove, "remove an alias").add_argument("alias")

    keys = objects.add_parser("dkim", help="DKIM signing keys (RFC 6376)").add_subparsers(dest="action", required=True)
    create = command(keys, "create", dkim_create, "make a signing key for a domain and print its DNS TXT record")
    create.add_argument("domain")
    create.add_argument("--selector", default=dkim.DEFAULT_SELECTOR, help="the selector (default: %(default)s)")
    create.add_argument("--bits", type=int, default=dkim.KEY_BITS, choices=(1024, 2048, 3072, 4096), help="RSA key size")
    create.add_argument("--force", action="store_true", help="replace the domain's key")
    command(keys, "show", dkim_show, "print the DNS TXT record of a domain's key").add_argument("domain")
    return parser


# -- entry point -------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (2) and --help (0)
        return int(exit_.code or 0)
    target: Target | None = None
    try:
        target = locate(args.stack, os.environ)
        args.target = target
        args.handler(Store.build(target.settings, target.clients), args, sys.stdout)
    except (MailError, StackNotFound) as error:
        return _fail(str(error))
    except RuntimeError as error:  # incomplete resource environment (mailcore.settings)
        return _fail(str(error))
    except ClientError as error:
        code = error.response.get("Error", {})
        return _fail(f"{code.get('Code', 'AWS error')}: {code.get('Message', '')}".rstrip(": "))
    except BotoCoreError as error:
        hint = f" ({target.source}: is it running?)" if target and "local stack" in target.source else ""
        return _fail(f"{error}{hint}")
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
