"""``occ identity add``: attach an MSISDN, IMSI, SIP URI or RADIUS user to an account."""

from __future__ import annotations

import argparse
import sys

from billing.accounts import IdentityRow
from billing.provisioning import IdentityKind, Outcome, check_identity
from occ.cli import common
from occ.cli.account import now, provision, usage

# option -> identity kind
_KINDS = {
    "msisdn": IdentityKind.MSISDN,
    "imsi": IdentityKind.IMSI,
    "sip_uri": IdentityKind.SIP_URI,
    "radius_user": IdentityKind.RADIUS_USER,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("identity", help="identities of accounts", description="identities of accounts")
    commands = group.add_subparsers(dest="identity_command", metavar="COMMAND", required=True)
    add = common.add_command(
        commands,
        "add",
        "attach an identity to an account (again with a new password: change it)",
        json_output=False,
    )
    add.add_argument("account_id", metavar="ID")
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--msisdn", metavar="N", help="E.164 number, digits only")
    kind.add_argument("--imsi", metavar="N", help="6-15 digits")
    kind.add_argument("--sip-uri", metavar="U", help="sip:, sips: or tel: URI")
    kind.add_argument("--radius-user", metavar="U", help="RADIUS User-Name (needs --password)")
    add.add_argument("--password", metavar="P", help="the RADIUS user's password; '-' reads it from stdin")
    add.set_defaults(handler=_add)


def _add(args: argparse.Namespace) -> int:
    option, kind = next((o, k) for o, k in _KINDS.items() if getattr(args, o) is not None)
    value: str = getattr(args, option)
    secret: str | None = args.password
    if kind is IdentityKind.RADIUS_USER and secret is None:
        raise common.UsageError("--radius-user needs --password")
    if kind is not IdentityKind.RADIUS_USER and secret is not None:
        raise common.UsageError("--password goes with --radius-user only")
    if secret == "-":
        secret = sys.stdin.readline().rstrip("\r\n")
    identity = IdentityRow(kind=kind.value, value=value, account_id=args.account_id, secret=secret)
    usage(lambda: check_identity(identity))
    when = now()
    outcome: Outcome = provision(args, lambda p: p.add_identity(identity, now=when))
    what = f"{kind.value} {value}"
    if outcome is Outcome.CREATED:
        print(f"{what} added to account {args.account_id}")
    elif outcome is Outcome.UPDATED:
        print(f"{what} of account {args.account_id}: password changed")
    else:
        print(f"{what} already belongs to account {args.account_id}")
    return 0
