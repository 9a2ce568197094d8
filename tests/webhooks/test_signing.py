"""Our signatures are Standard Webhooks signatures: the reference verifier accepts them, and
refuses them when the body, id or timestamp changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cbstop.webhooks.signing import generate_secret, headers, sign, signing_key

BODY = b'{"id":"evt_1","type":"integration.created","data":{"object":{"id":"int_1"}}}'


def as_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    secret = generate_secret()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret), secret
    assert len(signing_key(secret)) == 32
    assert generate_secret() != secret


def test_the_reference_verifier_accepts_our_headers() -> None:
    secret = generate_secret()
    now = int(time.time())
    sent = as_dict(headers(secret, "evt_1", now, BODY))
    assert Webhook(secret).verify(BODY, sent) == {
        "id": "evt_1",
        "type": "integration.created",
        "data": {"object": {"id": "int_1"}},
    }


def test_headers_are_the_three_standard_ones_in_lower_case() -> None:
    secret = generate_secret()
    sent = headers(secret, "evt_1", 1_700_000_000, BODY)
    assert [name for name, _ in sent] == ["webhook-id", "webhook-timestamp", "webhook-signature"]
    assert sent[:2] == [("webhook-id", "evt_1"), ("webhook-timestamp", "1700000000")]
    assert sent[2][1] == sign(secret, "evt_1", 1_700_000_000, BODY)


def test_the_signature_is_v1_and_base64_hmac_sha256_of_id_timestamp_body() -> None:
    # The published algorithm, written out: what a receiver without a library would compute.
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    digest = hmac.new(key, b"evt_9.1700000000." + BODY, hashlib.sha256).digest()
    assert sign(secret, "evt_9", 1_700_000_000, BODY) == "v1," + base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("body", BODY.replace(b"int_1", b"int_2")),
        ("webhook-id", "evt_2"),
        ("webhook-timestamp", "+1"),
    ],
)
def test_a_changed_body_id_or_timestamp_fails_verification(change: str, value: object) -> None:
    secret = generate_secret()
    now = int(time.time())
    sent = as_dict(headers(secret, "evt_1", now, BODY))
    body = BODY
    if change == "body":
        assert isinstance(value, bytes)
        body = value
    elif value == "+1":
        sent[change] = str(now + 1)
    else:
        assert isinstance(value, str)
        sent[change] = value
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(secret).verify(body, sent)


def test_another_secret_fails_verification() -> None:
    sent = as_dict(headers(generate_secret(), "evt_1", int(time.time()), BODY))
    with pytest.raises(WebhookVerificationError, match="No matching signature found"):
        Webhook(generate_secret()).verify(BODY, sent)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "a webhook secret starts with 'whsec_'"),
        (base64.b64encode(bytes(32)).decode(), "a webhook secret starts with 'whsec_'"),
        ("whsec_", "a webhook secret's key is 24 to 64 bytes, not 0"),
        ("whsec_not base64!", "a webhook secret is 'whsec_' and then base64"),
        ("whsec_" + base64.b64encode(bytes(32)).decode()[:-1], "and then base64"),
        ("whsec_" + base64.b64encode(bytes(16)).decode(), "24 to 64 bytes, not 16"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes, not 65"),
    ],
)
def test_a_malformed_secret_is_a_value_error_saying_why(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        signing_key(secret)
    with pytest.raises(ValueError, match=re.escape(message)):
        sign(secret, "evt_1", 1, BODY)


@pytest.mark.parametrize("size", [24, 64])
def test_keys_of_24_to_64_bytes_sign_as_the_reference_does(size: int) -> None:
    secret = "whsec_" + base64.b64encode(bytes(range(size))).decode()
    now = int(time.time())
    Webhook(secret).verify(BODY, as_dict(headers(secret, "evt_1", now, BODY)))
