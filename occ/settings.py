"""The one configuration file, decoded into typed frozen settings.

Each package owns the settings slice it consumes (``balance.settings``, ``billing.settings``); this module
composes the slices from the TOML file, applies environment overrides and turns every decode problem into
a :class:`ConfigError` that names the file, the key and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from aaa.dictionary import DictionaryError
from aaa.settings import RadiusSettings
from balance.settings import BalanceSettings, RedisSettings
from billing.settings import BillingSettings, DatabaseSettings, SinkSettings
from occ.diameter.cc_settings import CreditControlSettings
from occ.diameter.settings import DiameterSettings
from rating_core.money import parse_money

DEFAULT_CONFIG = Path("config/occ.toml")

# Environment variables that override one key each: variable -> dotted key.
ENV_OVERRIDES: dict[str, str] = {
    "OCC_REDIS_URL": "redis.url",
    "OCC_DATABASE_URL": "database.url",
    "OCC_METRICS_PORT": "metrics.port",
    "OCC_RUN_DIR": "server.run_dir",
}


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names file and key."""


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Directory for the pid file and private service instances; relative paths are relative to the cwd.
    run_dir: str = "run"
    log_level: str = "info"
    # "text" (key=value) or "json" (one object per line)
    log_format: str = "text"
    # Seconds a graceful shutdown waits for requests in flight.
    shutdown_grace_s: float = 10.0
    # Worker processes. With more than one, `occ serve` supervises them and deals them the Diameter
    # connections; they share the RADIUS ports (SO_REUSEPORT: Access-Requests spread one by one, a NAS's
    # accounting on one worker). Worker i serves /metrics on metrics.port + i - 1; only worker 1 runs the
    # charge sink.
    workers: int = 1


class MetricsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1"
    port: int = 9464


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    balance: BalanceSettings = msgspec.field(default_factory=BalanceSettings)
    diameter: DiameterSettings = msgspec.field(default_factory=DiameterSettings)
    radius: RadiusSettings = msgspec.field(default_factory=RadiusSettings)
    sink: SinkSettings = msgspec.field(default_factory=SinkSettings)
    billing: BillingSettings = msgspec.field(default_factory=BillingSettings)


_LOG_LEVELS = {"debug", "info", "warning", "error"}


def with_metrics_port(settings: Settings, port: int) -> Settings:
    """The settings of a process that serves /metrics on a port of its own (``occ sink``, workers)."""
    return msgspec.structs.replace(settings, metrics=msgspec.structs.replace(settings.metrics, port=port))


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: the explicit path, else ``$OCC_CONFIG``, else ``config/occ.toml``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("OCC_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read, override from the environment, decode and check the configuration file."""
    file = config_path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    return settings_from_dict(raw, str(file), os.environ if environ is None else environ)


def settings_from_dict(
    raw: dict[str, Any], source: str, environ: dict[str, str] | os._Environ[str]
) -> Settings:
    for var, dotted in ENV_OVERRIDES.items():
        if var in environ:
            section, key = dotted.split(".")
            value: Any = environ[var]
            if key == "port":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"${var}: expected an integer port, got {value!r}") from None
            raw.setdefault(section, {})[key] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    _check(settings, source)
    return settings


def _describe(exc: msgspec.ValidationError) -> str:
    """ "Expected `int`, got `str` - at `$.metrics.port`" as "metrics.port: expected int, got str"."""
    text = str(exc)
    where = ""
    match = re.search(r" - at `\$\.?([^`]*)`$", text)
    if match:
        where = match.group(1)
        text = text[: match.start()]
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unknown:
        key = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return f"{key}: unknown key"
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    if missing:
        key = f"{where}.{missing.group(1)}" if where else missing.group(1)
        return f"{key}: required key is missing"
    text = text.replace("`", "")
    text = text[:1].lower() + text[1:]
    return f"{where}: {text}" if where else text


def _check(s: Settings, source: str) -> None:
    def fail(key: str, expected: str, got: object) -> None:
        raise ConfigError(f"{source}: {key}: expected {expected}, got {got!r}")

    if s.server.log_level not in _LOG_LEVELS:
        fail("server.log_level", "one of " + ", ".join(sorted(_LOG_LEVELS)), s.server.log_level)
    if s.server.log_format not in ("text", "json"):
        fail("server.log_format", '"text" or "json"', s.server.log_format)
    if not 1 <= s.server.workers <= 64:
        fail("server.workers", "an integer 1-64", s.server.workers)
    if s.server.workers > 1:
        if s.diameter.port == 0:
            fail("diameter.port", "a fixed port when server.workers > 1 (workers share it)", 0)
        if s.radius.enabled and 0 in (s.radius.auth_port, s.radius.acct_port):
            fail("radius.auth_port", "fixed ports when server.workers > 1 (workers share them)", 0)
        if s.metrics.port + s.server.workers - 1 > 65535:
            fail("metrics.port", "room for one port per worker", s.metrics.port)
    if not 0 < s.metrics.port < 65536:
        fail("metrics.port", "a port number 1-65535", s.metrics.port)
    if not s.redis.url.startswith(("redis://", "rediss://", "unix://")):
        fail("redis.url", "a redis:// URL", s.redis.url)
    if not 1 <= s.redis.partitions <= 4096:
        fail("redis.partitions", "an integer 1-4096", s.redis.partitions)
    if not s.redis.key_prefix or "{" in s.redis.key_prefix or "}" in s.redis.key_prefix:
        fail("redis.key_prefix", "a non-empty prefix without braces", s.redis.key_prefix)
    if not s.database.url.startswith(("postgresql://", "postgres://")):
        fail("database.url", "a postgresql:// URL", s.database.url)
    if s.balance.reservation_ttl_s <= 0:
        fail("balance.reservation_ttl_s", "a positive number of seconds", s.balance.reservation_ttl_s)
    if s.balance.reaper_interval_s <= 0:
        fail("balance.reaper_interval_s", "a positive number of seconds", s.balance.reaper_interval_s)
    if s.balance.session_keep_s <= 0:
        fail("balance.session_keep_s", "a positive number of seconds", s.balance.session_keep_s)
    if s.balance.idempotency_ttl_s <= 0:
        fail("balance.idempotency_ttl_s", "a positive number of seconds", s.balance.idempotency_ttl_s)
    for service, units in s.balance.default_grants.items():
        if units <= 0:
            fail(f"balance.default_grants.{service}", "a positive number of units", units)
    for service, units in s.balance.max_grants.items():
        if units <= 0:
            fail(f"balance.max_grants.{service}", "a positive number of units", units)
    _check_sink(s.sink, fail)
    _check_billing(s.billing, fail)
    _check_diameter(s.diameter, fail)
    _check_radius(s.radius, source, fail)


def _check_billing(b: BillingSettings, fail: Callable[[str, str, object], None]) -> None:
    d = b.dunning
    if not 0 <= d.reminder_after_days <= d.suspend_after_days:
        fail(
            "billing.dunning.suspend_after_days",
            "at least reminder_after_days (0 or more)",
            d.suspend_after_days,
        )
    if "default" not in b.operators:
        fail("billing.operators", 'an operator named "default" (accounts bill through it unless told)', "")
    for name, op in b.operators.items():
        where = f"billing.operators.{name}"
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", name):
            fail(where, "an operator id of letters, digits, '.', '_' or '-'", name)
        if not op.name.strip():
            fail(f"{where}.name", "the issuer's name", op.name)
        if not re.fullmatch(r"[A-Za-z0-9._/-]{0,16}", op.invoice_prefix):
            fail(
                f"{where}.invoice_prefix", "up to 16 letters, digits, '.', '_', '/' or '-'", op.invoice_prefix
            )
        if not 0 <= op.payment_terms_days <= 365:
            fail(f"{where}.payment_terms_days", "0-365 days", op.payment_terms_days)
        for key, rate in [("default_tax", op.default_tax), *((f"taxes.{k}", v) for k, v in op.taxes.items())]:
            try:
                ppm: int = parse_money(rate)
            except ValueError:
                ppm = -1
            if not 0 <= ppm <= 1_000_000:
                fail(f"{where}.{key}", 'a rate between "0" and "1" such as "0.20"', rate)


def _check_sink(k: SinkSettings, fail: Callable[[str, str, object], None]) -> None:
    if not k.group:
        fail("sink.group", "a non-empty consumer group name", k.group)
    if not 1 <= k.batch_size <= 100_000:
        fail("sink.batch_size", "an integer 1-100000", k.batch_size)
    for key in ("poll_interval_s", "claim_idle_s", "retry_max_s"):
        if getattr(k, key) <= 0:
            fail(f"sink.{key}", "a positive number of seconds", getattr(k, key))
    if not 0 < k.metrics_port < 65536:
        fail("sink.metrics_port", "a port number 1-65535", k.metrics_port)


def _check_radius(r: RadiusSettings, source: str, fail: Callable[[str, str, object], None]) -> None:
    for key in ("auth_port", "acct_port"):
        if not 0 <= getattr(r, key) < 65536:
            fail(f"radius.{key}", "a port number 0-65535 (0: any free port)", getattr(r, key))
    if r.enabled and not r.listen:
        fail("radius.listen", "at least one address to listen on", r.listen)
    for address in r.listen:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail("radius.listen", "IP addresses", address)
    for n, client in enumerate(r.clients):
        where = f"radius.clients[{n}]"
        try:
            ipaddress.ip_network(client.address, strict=False)
        except ValueError:
            fail(f"{where}.address", "an IP address or CIDR block", client.address)
        if not client.secret:
            fail(f"{where}.secret", "a non-empty shared secret", "")
        if client.profile not in r.profiles:
            fail(
                f"{where}.profile", "one of radius.profiles: " + ", ".join(sorted(r.profiles)), client.profile
            )
        if not 0 <= client.coa_port < 65536:
            fail(f"{where}.coa_port", "a port number (0: no Disconnect/CoA)", client.coa_port)
    for key in ("interim_interval_s", "stale_intervals", "coa_timeout_s", "duplicate_window_s"):
        if getattr(r, key) <= 0:
            fail(f"radius.{key}", "a positive number", getattr(r, key))
    if r.coa_retries < 0:
        fail("radius.coa_retries", "a number of retries >= 0", r.coa_retries)
    if r.enabled:
        from aaa.server import validate  # reads the dictionary files

        try:
            validate(r)
        except (ValueError, DictionaryError) as exc:
            raise ConfigError(f"{source}: radius: {exc}") from None


def _check_credit_control(cc: CreditControlSettings, fail: Callable[[str, str, object], None]) -> None:
    key = "diameter.credit_control"
    for group, rg in cc.rating_groups.items():
        where = f"{key}.rating_groups.{group}"
        if not group.isdigit():
            fail(f"{key}.rating_groups", "Rating-Group numbers as keys", group)
        if rg.final_unit_action not in ("TERMINATE", "REDIRECT", "RESTRICT_ACCESS"):
            fail(f"{where}.final_unit_action", "TERMINATE, REDIRECT or RESTRICT_ACCESS", rg.final_unit_action)
        if rg.final_unit_action == "REDIRECT" and not rg.redirect_url:
            fail(f"{where}.redirect_url", "a URL for the REDIRECT final unit action", rg.redirect_url)
        if rg.final_unit_action == "RESTRICT_ACCESS" and not rg.filter_id:
            fail(f"{where}.filter_id", "a Filter-Id for the RESTRICT_ACCESS final unit action", rg.filter_id)
    if cc.failure_handling not in ("TERMINATE", "CONTINUE", "RETRY_AND_TERMINATE"):
        fail(f"{key}.failure_handling", "TERMINATE, CONTINUE or RETRY_AND_TERMINATE", cc.failure_handling)
    for name in ("validity_time_s", "session_timeout_s"):
        if getattr(cc, name) <= 0:
            fail(f"{key}.{name}", "a positive number of seconds", getattr(cc, name))
    if cc.request_timeout_s <= 0:
        fail(f"{key}.request_timeout_s", "a positive number of seconds", cc.request_timeout_s)
    try:
        if cc.max_refund_micro < 0:
            fail(f"{key}.max_refund", "a non-negative amount", cc.max_refund)
    except ValueError:
        fail(f"{key}.max_refund", 'a decimal amount like "10.00"', cc.max_refund)


def _check_diameter(d: DiameterSettings, fail: Callable[[str, str, object], None]) -> None:
    _check_credit_control(d.credit_control, fail)
    if not 0 <= d.port < 65536:
        fail("diameter.port", "a port number 0-65535 (0: any free port)", d.port)
    if not d.listen:
        fail("diameter.listen", "an address to listen on", d.listen)
    for key, identity in (("origin_host", d.origin_host), ("origin_realm", d.origin_realm)):
        if not identity or any(c.isspace() for c in identity) or not identity.isascii():
            fail(f"diameter.{key}", "a DiameterIdentity (FQDN)", identity)
    for i, address in enumerate(d.host_ip_addresses):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            fail(f"diameter.host_ip_addresses[{i}]", "an IPv4 or IPv6 address", address)
    for key, value in (("vendor_id", d.vendor_id), ("firmware_revision", d.firmware_revision)):
        if not 0 <= value <= 0xFFFFFFFF:
            fail(f"diameter.{key}", "an Unsigned32", value)
    for i, peer in enumerate(d.allowed_peers):
        if not peer.host or not peer.realm:
            fail(f"diameter.allowed_peers[{i}]", 'host and realm patterns ("*": any)', peer)
    if not d.watchdog_s > 0:
        fail("diameter.watchdog_s", "a positive number of seconds", d.watchdog_s)
    if not 20 <= d.max_message_length <= 0xFFFFFF:
        fail("diameter.max_message_length", "a length of 20-16777215 bytes", d.max_message_length)
    if d.max_in_flight < 1:
        fail("diameter.max_in_flight", "a positive number", d.max_in_flight)
    tls = d.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        fail("diameter.tls", "cert_file and key_file together", tls)
    if tls.ca_file and not tls.cert_file:
        fail("diameter.tls.ca_file", "cert_file and key_file as well", tls.ca_file)
