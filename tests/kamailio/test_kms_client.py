"""The focus's KMS client (secconf.kamailio.kms) without servers: refusals and outages.

``request_ticket`` (group-key tickets for rekeys): a KMS refusal is
``KmsRefusedRequest`` (503 to the rekey: no epoch can be minted), a KMS that does
not answer is ``ServiceUnavailable``; ``resolve`` keeps its 403 for refused tickets.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from secconf.core.errors import MikeyError, ServiceUnavailable
from secconf.core.mikey import group as mikey_group
from secconf.core.mikey import ticket as mikey_ticket
from secconf.kamailio.kms import HttpKmsResolver, KmsRefusedRequest
from secconf.kamailio.settings import KmsSettings

SETTINGS = KmsSettings(
    url="http://kms.invalid:1",
    kms_identity="sip:kms.example.com",
    focus_identity="sip:focus@conf.example.com",
    psk=hashlib.sha256(b"focus").digest(),
    timeout=0.2,
)


def _resolver(handler: httpx.MockTransport) -> HttpKmsResolver:
    resolver = HttpKmsResolver(SETTINGS)
    resolver._client = httpx.Client(transport=handler, timeout=0.2)
    return resolver


def _desired() -> mikey_ticket.DesiredPolicy:
    return mikey_group.group_ticket_policy(("sip:bob@example.com",), valid_until=time.time() + 60)


def test_a_kms_refusal_of_a_group_ticket_is_503_with_its_mikey_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/mikey/v1/request"
        assert request.headers["content-type"] == "application/mikey"
        body = mikey_ticket.build_error(request.content, (15,), now=time.time())
        return httpx.Response(400, content=body)

    with pytest.raises(KmsRefusedRequest) as caught:
        _resolver(httpx.MockTransport(refuse)).request_ticket(_desired())
    assert caught.value.status_code == 503
    assert "MIKEY error 15" in caught.value.message


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_kms_is_503(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status))
    with pytest.raises(ServiceUnavailable):
        _resolver(transport).request_ticket(_desired())


def test_a_kms_that_does_not_answer_is_503() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(ServiceUnavailable, match="KMS unavailable"):
        _resolver(httpx.MockTransport(hang)).request_ticket(_desired())


def test_a_forged_request_resp_does_not_verify() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"\x01" * 64))
    with pytest.raises(MikeyError) as caught:  # never a ticket the focus would use
        _resolver(transport).request_ticket(_desired())
    assert caught.value.status_code in (400, 403)
