"""Redis URLs in messages never carry a password."""

from __future__ import annotations

import pytest

from balance.link import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:p@ss@h:6379/0", "redis://user:***@h:6379/0"),
        (
            "redis://:a@10.0.0.1:7000,redis://:b@10.0.0.2:7000",
            "redis://:***@10.0.0.1:7000,redis://:***@10.0.0.2:7000",
        ),
    ],
)
def test_every_password_in_a_url_or_seed_list_is_hidden(url: str, shown: str) -> None:
    assert redact(url) == shown
