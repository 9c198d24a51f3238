"""The configuration file: every decode problem names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from aaa.settings import RadiusSettings
from billing.settings import BillingSettings
from occ.settings import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "occ.toml"

# Keys whose value in the shipped config/occ.toml deliberately differs from the built-in default.
# balance.max_grants: the file shows a 100 MiB data cap as an example, the code default caps nothing.


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "occ.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={} if environ is None else environ)
    return str(info.value)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), environ={}) == Settings()


def test_unknown_key_is_named_with_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlog_levl = "debug"\n')
    message = error_of(path)
    assert str(path) in message
    assert "server.log_levl" in message
    assert "unknown key" in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[radius_typo]\nport = 1812\n"))
    assert "radius_typo: unknown key" in message


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[metrics]\nport = "9464"\n')
    message = error_of(path)
    assert str(path) in message
    assert "metrics.port" in message
    assert "expected int" in message


def test_port_out_of_range_names_the_allowed_range(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nport = 70000\n")
    message = error_of(path)
    assert str(path) in message
    assert "metrics.port" in message
    assert "1-65535" in message
    assert "70000" in message


def test_bad_value_of_a_checked_key(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, '[server]\nlog_level = "loud"\n'))
    assert "server.log_level" in message
    assert "debug, error, info, warning" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = error_of(path)
    assert str(path) in message
    assert "not found" in message


def test_bad_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nlog_level = 'info'\n")
    message = error_of(path)
    assert str(path) in message
    assert "not valid TOML" in message
    assert "line 1" in message


def test_environment_overrides_the_urls(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\nurl = "redis://file:6379/0"\n[database]\nurl = "postgresql://file/db"\n')
    settings = load_settings(
        path,
        environ={
            "OCC_REDIS_URL": "redis://:secret@env-redis:6380/2",
            "OCC_DATABASE_URL": "postgresql://occ:secret@env-pg:5433/occ",
        },
    )
    assert settings.redis.url == "redis://:secret@env-redis:6380/2"
    assert settings.database.url == "postgresql://occ:secret@env-pg:5433/occ"


def test_environment_override_is_validated_like_the_file(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, ""), {"OCC_REDIS_URL": "http://not-redis"})
    assert "redis.url" in message
    assert "redis:// URL" in message


def test_non_numeric_port_override_names_the_variable(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, ""), {"OCC_METRICS_PORT": "ninety"})
    assert "$OCC_METRICS_PORT" in message


def test_shipped_config_decodes_to_the_defaults() -> None:
    """The shipped file documents every key with its default value. RADIUS clients, plans and vendor
    profiles and the billing operators are data (the demo ones), not defaults: the code's defaults are no
    clients, one profile and a bare "default" operator."""
    shipped = load_settings(SHIPPED, environ={})
    radius = msgspec.structs.replace(shipped.radius, clients=[], plans={}, profiles=RadiusSettings().profiles)
    billing = msgspec.structs.replace(shipped.billing, operators=BillingSettings().operators)
    assert msgspec.structs.replace(shipped, radius=radius, billing=billing) == Settings()
    assert shipped.billing.operators["default"].invoice_prefix == "DT-"
    assert [c.address for c in shipped.radius.clients] == ["127.0.0.1", "::1"]


def test_credit_control_settings_are_checked_naming_the_key(tmp_path: Path) -> None:
    text = '[diameter.credit_control.rating_groups.20]\nservice = "data"\nfinal_unit_action = "REDIRECT"\n'
    message = error_of(write(tmp_path, text))
    assert "diameter.credit_control.rating_groups.20.redirect_url" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[billing.operators.default]\nname = "X"\ndefault_tax = "1.5"\n',
            "billing.operators.default.default_tax",
        ),
        (
            '[billing.operators.default]\nname = "X"\ntaxes = { data = "-0.1" }\n',
            "billing.operators.default.taxes.data",
        ),
        ('[billing.operators.default]\nname = " "\n', "billing.operators.default.name"),
        (
            '[billing.operators.default]\nname = "X"\ninvoice_prefix = "A B"\n',
            "billing.operators.default.invoice_prefix",
        ),
        ('[billing.operators.other]\nname = "X"\n', "billing.operators"),
        (
            "[billing.dunning]\nreminder_after_days = 30\nsuspend_after_days = 10\n",
            "billing.dunning.suspend_after_days",
        ),
        ("[sink]\nbatch_size = 0\n", "sink.batch_size"),
        ("[sink]\npoll_interval_s = 0\n", "sink.poll_interval_s"),
        ("[server]\nworkers = 0\n", "server.workers"),
        ("[server]\nworkers = 2\n[diameter]\nport = 0\n", "diameter.port"),
        ("[server]\nworkers = 2\n[radius]\nauth_port = 0\n", "radius.auth_port"),
    ],
)
def test_billing_and_sink_settings_are_checked_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert f"{key}:" in error_of(write(tmp_path, text), {})
