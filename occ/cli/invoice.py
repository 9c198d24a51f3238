"""``occ invoice list|show``: invoices, statements and credit notes as the billing run issued them."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from billing.credit_notes import issue_credit_note
from billing.invoice_model import BillingError
from billing.invoices import Document, fetch_document, list_documents
from billing.render import TemplateError, render_html, render_pdf, template_of, write_documents
from occ.cli import common
from occ.cli.account import with_database
from rating_core.money import format_money, parse_money


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("invoice", help="invoices and statements", description="invoices and statements")
    commands = group.add_subparsers(dest="invoice_command", metavar="COMMAND", required=True)
    listing = common.add_command(commands, "list", "invoices, statements and credit notes", json_output=True)
    listing.add_argument("--period", metavar="YYYY-MM", help="of this billing period only")
    listing.add_argument("--account", metavar="ID", help="of this account only")
    listing.set_defaults(handler=_list)
    show = common.add_command(
        commands,
        "show",
        "one document with its lines: an invoice or credit note NUMBER, or a statement ACCOUNT/YYYY-MM",
        json_output=True,
    )
    show.add_argument("number", metavar="NUMBER")
    show.set_defaults(handler=_show)
    for fmt in ("pdf", "html"):
        one = common.add_command(
            commands,
            fmt,
            f"write one document as {fmt.upper()} (from its operator's template)",
            json_output=False,
        )
        one.add_argument("number", metavar="NUMBER")
        one.add_argument(
            "-o", "--output", required=True, metavar="FILE", help="where to write it ('-': stdout)"
        )
        one.set_defaults(handler=_one, format=fmt)
    note = common.add_command(
        commands,
        "credit-note",
        "issue a credit note against an invoice (gross amount, split into net and tax as the invoice is)",
        json_output=True,
    )
    note.add_argument("number", metavar="NUMBER")
    note.add_argument("--amount", required=True, metavar="AMOUNT", help="gross, e.g. 5.00")
    note.add_argument("--reason", required=True)
    note.set_defaults(handler=_credit_note)
    batch = common.add_command(
        commands,
        "render",
        "write HTML and PDF of every document of a period into a folder per operator",
        json_output=False,
    )
    batch.add_argument("--period", required=True, metavar="YYYY-MM")
    batch.add_argument("--output", metavar="DIR", help="default: billing.output_dir")
    batch.set_defaults(handler=_render_all)


def _list(args: argparse.Namespace) -> int:
    async def run(conn: asyncpg.Connection) -> list[Document]:
        return await list_documents(conn, period=args.period, account_id=args.account)

    documents = with_database(args, run)
    if args.json:
        common.print_json([summary(d) for d in documents])
        return 0
    for d in documents:
        name = _name(d)
        print(
            f"{name:<22} {d.kind:<11} {d.account_id:<20} {d.period} {d.issued_on}"
            f" {format_money(d.total):>12} {d.currency} {d.status}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    async def run(conn: asyncpg.Connection) -> Document | None:
        return await fetch_document(conn, args.number)

    document = with_database(args, run)
    if document is None:
        raise common.CommandError(f"no invoice, credit note or statement {args.number!r}")
    if args.json:
        common.print_json(details(document))
        return 0
    d = document
    print(f"{d.kind} {d.number or d.account_id + '/' + d.period}  ({d.status})")
    print(f"issuer:   {d.issuer.get('name', '')} [{d.operator_id}]")
    print(f"customer: {d.customer.get('name', '')} [{d.account_id}]")
    print(f"period:   {d.period_start} to {d.period_end} (exclusive); issued {d.issued_on}", end="")
    print(f", due {d.due_on}" if d.due_on else "")
    if d.credits_number:
        print(f"credits:  {d.credits_number} ({d.reason})")
    if d.opening is not None:
        print(f"opening balance {format_money(d.opening):>38} {d.currency}")
    for line in d.lines:
        quantity = f"{line.quantity} {line.unit or ''}".strip() if line.quantity is not None else ""
        print(f"  {line.description:<36} {quantity:>18} {format_money(line.amount):>12}")
    print(f"subtotal {format_money(d.subtotal):>58}")
    for rate, base, tax in d.taxes:
        print(f"  tax {format_money(rate * 100)}% on {format_money(base)} {format_money(tax):>40}")
    print(f"total {format_money(d.total):>61} {d.currency}")
    if d.closing is not None:
        print(f"closing balance {format_money(d.closing):>38} {d.currency}")
    return 0


def _one(args: argparse.Namespace) -> int:
    settings = common.settings(args).billing

    async def run(conn: asyncpg.Connection) -> Document | None:
        return await fetch_document(conn, args.number)

    document = with_database(args, run)
    if document is None:
        raise common.CommandError(f"no invoice, credit note or statement {args.number!r}")
    templates = Path(settings.templates_dir)
    template = template_of(settings, document.operator_id)
    try:
        if args.format == "pdf":
            content = render_pdf(document, templates, template)
        else:
            content = render_html(document, templates, template).encode()
    except TemplateError as exc:
        raise common.UsageError(str(exc)) from None
    if args.output == "-":
        sys.stdout.buffer.write(content)
        return 0
    try:
        Path(args.output).write_bytes(content)
    except OSError as exc:
        raise common.CommandError(f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote {args.output} ({len(content)} bytes)")
    return 0


def _render_all(args: argparse.Namespace) -> int:
    settings = common.settings(args).billing
    out_dir = Path(args.output or settings.output_dir)

    async def run(conn: asyncpg.Connection) -> list[Document]:
        found = await list_documents(conn, period=args.period)
        return [d for d in [await fetch_document(conn, _name(d)) for d in found] if d is not None]

    documents = with_database(args, run)
    try:
        written = write_documents(documents, settings, Path(settings.templates_dir), out_dir)
    except TemplateError as exc:
        raise common.UsageError(str(exc)) from None
    except OSError as exc:
        raise common.CommandError(f"cannot write into {out_dir}: {exc.strerror}") from None
    print(f"wrote {len(written)} files for {len(documents)} documents into {out_dir}")
    return 0


def _credit_note(args: argparse.Namespace) -> int:
    try:
        amount = parse_money(args.amount)
    except ValueError:
        raise common.UsageError(
            f"invalid --amount {args.amount!r}: expected a decimal such as 5.00"
        ) from None
    settings = common.settings(args).billing
    today = datetime.now(UTC).date()

    async def run(conn: asyncpg.Connection) -> Document | None:
        number = await issue_credit_note(conn, settings, args.number, amount, args.reason, today)
        return await fetch_document(conn, number)

    try:
        document = with_database(args, run)
    except BillingError as exc:
        raise common.UsageError(str(exc)) from None
    assert document is not None
    if args.json:
        common.print_json(details(document))
    else:
        print(
            f"credit note {document.number} for invoice {args.number}: {format_money(document.total)}"
            f" {document.currency} (net {format_money(document.subtotal)}, tax {format_money(document.tax)})"
        )
    return 0


def _name(d: Document) -> str:
    return d.number or f"{d.account_id}/{d.period}"


def summary(d: Document) -> dict[str, object]:
    return {
        "number": d.number,
        "kind": d.kind,
        "account_id": d.account_id,
        "operator_id": d.operator_id,
        "period": d.period,
        "issued_on": d.issued_on.isoformat(),
        "due_on": d.due_on.isoformat() if d.due_on else None,
        "currency": d.currency,
        "subtotal": format_money(d.subtotal),
        "tax": format_money(d.tax),
        "total": format_money(d.total),
        "paid": format_money(d.paid),
        "status": d.status,
    }


def details(d: Document) -> dict[str, object]:
    return {
        **summary(d),
        "period_start": d.period_start.isoformat(),
        "period_end": d.period_end.isoformat(),
        "opening": None if d.opening is None else format_money(d.opening),
        "closing": None if d.closing is None else format_money(d.closing),
        "credits_number": d.credits_number,
        "reason": d.reason,
        "issuer": d.issuer,
        "customer": d.customer,
        "lines": [
            {
                "kind": line.kind,
                "service": line.service,
                "description": line.description,
                "quantity": line.quantity,
                "unit": line.unit,
                "amount": format_money(line.amount),
                "tax_rate": format_money(line.tax_rate),
            }
            for line in d.lines
        ],
        "taxes": [
            {"rate": format_money(rate), "base": format_money(base), "tax": format_money(tax)}
            for rate, base, tax in d.taxes
        ],
    }
