"""Settings shown to people: a NATS URL's secret never reaches a log line or a message."""

from __future__ import annotations

import pytest

from services.runtime.settings import Settings, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://introspect:s3cret@nats:4222", "nats://introspect:***@nats:4222"),
        ("tls://s3cret-token@nats.example:4222", "tls://***@nats.example:4222"),
        ("nats://user:p@ss@host:4222", "nats://user:***@host:4222"),  # an @ inside the password
        ("127.0.0.1:4222", "127.0.0.1:4222"),
    ],
)
def test_a_url_shown_has_its_secret_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert Settings(nats_url=url).public_nats_url == shown
