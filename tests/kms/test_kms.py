"""The KMS as a real process over HTTP with a real Redis: issue, resolve, refuse.

Users are provisioned with the `secconf kms user` command, tickets are made by
the participant client, and resolved by a separate responder process built
only from the public API (tests/kms/responder_process.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from secconf.core.errors import MikeyErrorNo, ServiceUnavailable
from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey import ticket as mt
from secconf.kms.async_client import KmsClient, KmsRefused
from secconf.store import load_key_file
from tests.fixtures.kms_server import RunningKms
from tests.fixtures.redis_server import RedisServer

RESPONDER = Path(__file__).parent / "responder_process.py"


def _identity(name: str) -> str:
    # Unique per test run: the module's KMS and Redis are shared between tests.
    return f"sip:{name}-{secrets.token_hex(4)}@example.com"


def _client(kms: RunningKms, identity: str, psk_file: Path) -> KmsClient:
    return KmsClient(kms.url, kms.identity, identity, load_key_file(psk_file, "PSK"), timeout=5)


def _desired(*recipients: str, lifetime: float = 600.0) -> mt.DesiredPolicy:
    return mt.DesiredPolicy(recipients=recipients, valid_until=time.time() + lifetime)


def _transfer(issued: mt.IssuedTicket, initiator: str, responder: str) -> mt.PendingTransfer:
    return mt.build_transfer_init(
        issued,
        initiator=initiator,
        responder=responder,
        sessions=[GenericIdEntry.for_srtp(1, [0], SrtpSessionData(0x1111, 0, 0))],
        now=time.time(),
        random_bytes=secrets.token_bytes,
    )


def _run_responder(kms: RunningKms, identity: str, psk_file: Path, transfer: bytes) -> dict:
    result = subprocess.run(
        [sys.executable, str(RESPONDER), kms.url, kms.identity, identity, str(psk_file)],
        input=transfer.hex(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def _redis_snapshot(kms: RunningKms) -> dict[bytes, bytes | None]:
    client = redis.Redis.from_url(kms.redis_url, socket_timeout=2)
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=200)}
    finally:
        client.close()


def test_ticket_from_the_client_is_resolved_by_a_separate_responder_process(
    kms: RunningKms,
) -> None:
    alice, factory = _identity("alice"), _identity("factory")
    alice_psk, factory_psk = kms.add_user(alice), kms.add_user(factory)
    issued = asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(factory)))
    assert issued.policy.initiator == alice
    pending = _transfer(issued, alice, factory)

    answer = _run_responder(kms, factory, factory_psk, pending.data)

    assert answer["initiator"] == alice
    result = mt.process_transfer_resp(
        pending, bytes.fromhex(answer["transfer_resp"]), now=time.time()
    )
    assert result.responder == factory
    mine = {
        str(cs): hashlib.sha256(k.key + k.salt).hexdigest() for cs, k in result.srtp_keys.items()
    }
    assert mine == answer["keys"]


def test_resolve_by_someone_not_among_the_recipients_is_refused_and_stores_nothing(
    kms: RunningKms,
) -> None:
    alice, bob, mallory = _identity("alice"), _identity("bob"), _identity("mallory")
    alice_psk, mallory_psk = kms.add_user(alice), kms.add_user(mallory)
    kms.add_user(bob)
    issued = asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(bob)))
    pending = _transfer(issued, alice, mallory)
    transfer = mt.TransferInit.read(pending.data)
    before = _redis_snapshot(kms)
    with pytest.raises(KmsRefused) as caught:
        asyncio.run(_client(kms, mallory, mallory_psk).resolve(transfer))
    assert caught.value.error_no == MikeyErrorNo.INVALID_TICKET
    assert _redis_snapshot(kms) == before


def test_wrong_psk_unknown_and_revoked_users_get_the_same_refusal(kms: RunningKms) -> None:
    alice, ghost, bob = _identity("alice"), _identity("ghost"), _identity("bob")
    alice_psk = kms.add_user(alice)
    kms.add_user(bob)
    wrong = KmsClient(kms.url, kms.identity, alice, bytes(32))
    unknown = KmsClient(kms.url, kms.identity, ghost, bytes(32))
    before = _redis_snapshot(kms)
    for client in (wrong, unknown):
        with pytest.raises(KmsRefused) as caught:
            asyncio.run(client.request_ticket(_desired(bob)))
        assert caught.value.error_no == MikeyErrorNo.AUTH_FAILURE
    assert _redis_snapshot(kms) == before
    kms.cli("user", "revoke", alice)
    with pytest.raises(KmsRefused) as caught:
        asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(bob)))
    assert caught.value.error_no == MikeyErrorNo.AUTH_FAILURE


def test_revoked_ticket_cannot_be_resolved(kms: RunningKms) -> None:
    alice, factory = _identity("alice"), _identity("factory")
    alice_psk, factory_psk = kms.add_user(alice), kms.add_user(factory)
    issued = asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(factory)))
    kms.cli("ticket", "revoke", issued.ticket_id.hex())
    answer = _run_responder(kms, factory, factory_psk, _transfer(issued, alice, factory).data)
    assert answer["refused"] == MikeyErrorNo.INVALID_TICKET


def test_expired_ticket_cannot_be_resolved(kms: RunningKms) -> None:
    alice, factory = _identity("alice"), _identity("factory")
    alice_psk, factory_psk = kms.add_user(alice), kms.add_user(factory)
    issued = asyncio.run(
        _client(kms, alice, alice_psk).request_ticket(_desired(factory, lifetime=1.0))
    )
    transfer = mt.TransferInit.read(_transfer(issued, alice, factory).data)
    time.sleep(1.3)
    with pytest.raises(KmsRefused) as caught:
        asyncio.run(_client(kms, factory, factory_psk).resolve(transfer))
    assert caught.value.error_no == MikeyErrorNo.INVALID_TICKET


def test_a_replayed_request_is_refused(kms: RunningKms) -> None:
    alice, bob = _identity("alice"), _identity("bob")
    alice_psk = kms.add_user(alice)
    kms.add_user(bob)
    pending = mt.build_request_init(
        initiator=alice, kms=kms.identity, psk=load_key_file(alice_psk, "PSK"),
        desired=_desired(bob), now=time.time(), random_bytes=secrets.token_bytes,
    )  # fmt: skip
    headers = {"content-type": "application/mikey"}
    first = httpx.post(kms.url + "/mikey/v1/request", content=pending.data, headers=headers)
    assert first.status_code == 200
    again = httpx.post(kms.url + "/mikey/v1/request", content=pending.data, headers=headers)
    assert again.status_code == 403
    assert mt.read_error(again.content) == (MikeyErrorNo.INVALID_TS,)
    assert again.headers["secconf-mikey-error"] == str(int(MikeyErrorNo.INVALID_TS))


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"", "application/mikey", 400),
        (b"\x01\x0b", "application/mikey", 400),  # truncated HDR
        (b"\x01\x0b\x63" + bytes(40), "application/mikey", 400),  # unknown payload type
        (bytes(70_000), "application/mikey", 413),
        (b"\x01", "text/plain", 415),
    ],
)
def test_bad_bodies_get_precise_http_errors(
    kms: RunningKms, body: bytes, content_type: str, status: int
) -> None:
    before = _redis_snapshot(kms)
    for path in ("/mikey/v1/request", "/mikey/v1/resolve"):
        response = httpx.post(kms.url + path, content=body, headers={"content-type": content_type})
        assert response.status_code == status
        if status != 415:
            assert response.headers["content-type"] == "application/mikey"
            mt.read_error(response.content)
    assert _redis_snapshot(kms) == before


def test_kms_answers_503_while_redis_is_down_and_recovers(
    kms: RunningKms, redis_server: RedisServer
) -> None:
    alice, bob = _identity("alice"), _identity("bob")
    alice_psk = kms.add_user(alice)
    kms.add_user(bob)
    client = _client(kms, alice, alice_psk)
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            asyncio.run(client.request_ticket(_desired(bob)))
        assert time.monotonic() - started < 3.0
        assert httpx.get(kms.url + "/healthz").status_code == 503
    finally:
        redis_server.start()
    # Redis came back empty (it persists nothing): provision again and go on.
    alice_psk = kms.add_user(alice)
    kms.add_user(bob)
    issued = asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(bob)))
    assert issued.policy.recipients == (bob,)
    assert httpx.get(kms.url + "/healthz").json()["status"] == "ok"


def test_no_key_material_in_redis_in_clear(kms: RunningKms) -> None:
    alice, factory = _identity("alice"), _identity("factory")
    alice_psk, factory_psk = kms.add_user(alice), kms.add_user(factory)
    issued = asyncio.run(_client(kms, alice, alice_psk).request_ticket(_desired(factory)))
    answer = _run_responder(kms, factory, factory_psk, _transfer(issued, alice, factory).data)
    assert "keys" in answer
    secrets_in_play = [
        load_key_file(alice_psk, "PSK"),
        load_key_file(factory_psk, "PSK"),
        issued.mpki,
        *(key.key for key in issued.traffic_keys),
    ]
    client = redis.Redis.from_url(kms.redis_url, socket_timeout=2)
    try:
        stored = b"".join(key + (client.dump(key) or b"") for key in client.scan_iter(count=200))
    finally:
        client.close()
    for secret in secrets_in_play:
        assert secret not in stored
        assert secret.hex().encode() not in stored


def test_client_ticket_command_prints_the_policy_and_no_key(kms: RunningKms) -> None:
    alice, bob = _identity("alice"), _identity("bob")
    alice_psk = kms.add_user(alice)
    kms.add_user(bob)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "secconf"), "client", "ticket",
            "--kms-url", kms.url, "--kms-identity", kms.identity, "--identity", alice,
            "--psk-file", str(alice_psk), "--recipient", bob,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"initiator   {alice}" in result.stdout
    assert bob in result.stdout
    assert load_key_file(alice_psk, "PSK").hex() not in result.stdout


def test_user_list_shows_identities_never_keys(kms: RunningKms) -> None:
    carol = _identity("carol")
    psk = kms.add_user(carol)
    listing = kms.cli("user", "list").stdout
    assert carol.split("@")[0] in listing
    assert load_key_file(psk, "PSK").hex() not in listing
