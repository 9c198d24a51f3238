"""Settings slice of the billing package: the PostgreSQL system of record."""

from __future__ import annotations

import msgspec


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str = "postgresql://postgres@127.0.0.1:5432/test"
    pool_min: int = 1
    pool_max: int = 8
    connect_timeout_s: float = 5.0


class SinkSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Run the charge sink inside `occ serve`; turn it off where `occ sink` runs on its own.
    enabled: bool = True
    # Consumer group of the charge streams; every sink of one deployment shares it.
    group: str = "ledger"
    # This reader's name within the group; empty: the host name. Entries a reader took and did not
    # acknowledge are read again by the same name after a restart, or claimed by another after claim_idle_s.
    consumer: str = ""
    # Entries read per stream partition in one round; one round is one PostgreSQL transaction.
    batch_size: int = 1000
    # Rounds start this far apart unless the last one filled a batch (a backlog): each gathers the
    # records of that time, so that a round's fixed costs are shared by many records.
    poll_interval_s: float = 0.05
    claim_idle_s: float = 60.0
    # Longest pause between retries while PostgreSQL or Redis is unreachable.
    retry_max_s: float = 5.0
    # /metrics and /health port of `occ sink` running alone (`occ serve` uses metrics.port).
    metrics_port: int = 9465


class OperatorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An issuer of invoices: the company that bills the accounts assigned to it."""

    name: str
    address: str = ""
    tax_id: str = ""
    email: str = ""
    bank: str = ""
    # invoice numbers are <prefix><year>-<6 digits>, gapless per operator and year
    invoice_prefix: str = "INV-"
    payment_terms_days: int = 14
    # tax rates as decimal fractions ("0.20" = 20 %), by service; default_tax for the others (fees too)
    default_tax: str = "0.00"
    taxes: dict[str, str] = msgspec.field(default_factory=dict)
    # folder under billing.templates_dir with invoice.html (browser) and invoice.pdf.html (the HTML subset
    # the PDF writer draws); a file missing there comes from the "default" folder
    template: str = "default"


class DunningSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # days after an invoice's due date: a reminder, then the account's suspension (reactivated once every
    # invoice that led to it is paid or credited)
    reminder_after_days: int = 7
    suspend_after_days: int = 21


class BillingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # where `occ bill run --render` writes invoices: <output_dir>/<operator>/<number>.{html,pdf}
    output_dir: str = "run/invoices"
    # Jinja2 templates of invoices, statements and credit notes, one folder per look
    templates_dir: str = "config/templates"
    operators: dict[str, OperatorSettings] = msgspec.field(
        default_factory=lambda: {"default": OperatorSettings(name="occ operator")}
    )
    dunning: DunningSettings = msgspec.field(default_factory=DunningSettings)
