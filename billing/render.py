"""Invoices, statements and credit notes as HTML (Jinja2) and PDF (fpdf2), from a template folder per
operator.

The PDF is drawn by fpdf2 from ``invoice.pdf.html``, the HTML subset its ``write_html`` understands; with
DejaVu Sans installed (Debian: fonts-dejavu-core) any script prints, else the PDF's built-in Helvetica,
which knows Latin-1 only (other characters become "?").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import jinja2
from fpdf import FPDF

from billing.invoices import Document
from billing.settings import BillingSettings
from rating_core.money import format_money

_TITLES = {"invoice": "Invoice", "statement": "Statement", "credit_note": "Credit note"}
_FONTS = Path("/usr/share/fonts/truetype/dejavu")
_TABLES = re.compile(r"(<table\b.*?</table>)", re.S | re.I)


class TemplateError(Exception):
    """A template is missing or broken; the message names it."""


def _environment(templates_dir: Path, template: str) -> jinja2.Environment:
    folders = [templates_dir / template]
    if template != "default":
        folders.append(templates_dir / "default")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["money"] = lambda m: "" if m is None else format_money(int(m))
    env.filters["percent"] = lambda ppm: f"{format_money(int(ppm) * 100).removesuffix('.00')}%"
    return env


def _render(doc: Document, templates_dir: Path, template: str, name: str) -> str:
    try:
        page = _environment(templates_dir, template).get_template(name)
        return page.render(
            doc=doc,
            title=_TITLES.get(doc.kind, doc.kind),
            name=doc.number or f"{doc.account_id}/{doc.period}",
            statement=doc.kind == "statement",
            last_day=doc.period_end - timedelta(days=1),
        )
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {name} not found in {templates_dir / template}: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {template}/{name}: {exc}") from None


def render_html(doc: Document, templates_dir: Path, template: str = "default") -> str:
    return _render(doc, templates_dir, template, "invoice.html")


def render_pdf(doc: Document, templates_dir: Path, template: str = "default") -> bytes:
    html = _render(doc, templates_dir, template, "invoice.pdf.html")
    pdf = FPDF(format="A4")
    pdf.set_title(f"{_TITLES.get(doc.kind, doc.kind)} {doc.number or doc.account_id}")
    pdf.set_author(str(doc.issuer.get("name", "")))
    pdf.set_creator("occ")
    family = "Helvetica"
    if (_FONTS / "DejaVuSans.ttf").exists() and (_FONTS / "DejaVuSans-Bold.ttf").exists():
        pdf.add_font("DejaVu", "", str(_FONTS / "DejaVuSans.ttf"))
        pdf.add_font("DejaVu", "B", str(_FONTS / "DejaVuSans-Bold.ttf"))
        family = "DejaVu"
    else:
        html = html.encode("latin-1", errors="replace").decode("latin-1")
    pdf.set_font(family, size=10)
    pdf.add_page()
    # each table is drawn by a write_html of its own: a <b> anywhere before a table in the same call
    # would print the whole table bold (fpdf2 keeps the emphasis state across the call)
    for part in _TABLES.split(html):
        if part.strip():
            pdf.write_html(part)
    return bytes(pdf.output())


def template_of(settings: BillingSettings, operator_id: str) -> str:
    operator = settings.operators.get(operator_id)
    return operator.template if operator is not None else "default"


def write_documents(
    documents: Iterable[Document], settings: BillingSettings, templates_dir: Path, out_dir: Path
) -> list[Path]:
    """HTML and PDF of each document into ``out_dir/<operator>/``, named by number (statements:
    ``<account>_<period>``); returns the files written."""
    written = []
    for doc in documents:
        folder = out_dir / doc.operator_id
        folder.mkdir(parents=True, exist_ok=True)
        stem = doc.number or f"statement_{doc.account_id}_{doc.period}"
        template = template_of(settings, doc.operator_id)
        for path, content in (
            (folder / f"{stem}.html", render_html(doc, templates_dir, template).encode()),
            (folder / f"{stem}.pdf", render_pdf(doc, templates_dir, template)),
        ):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
            written.append(path)
    return written
