"""secconf.lab.services.kms.KmsProcess: the launcher the demo and the benchmarks use."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from secconf.core.mikey import ticket as mikey_ticket
from secconf.kms.async_client import KmsClient, KmsRefused
from secconf.lab.services.kms import KmsProcess
from secconf.lab.services.process import ServiceError
from secconf.lab.services.redis_server import RedisProcess
from secconf.store.keywrap import load_key_file

KMS_ID = "sip:kms.process.invalid"
ALICE, BOB = "sip:alice@example.com", "sip:bob@example.com"


def test_started_kms_issues_tickets_to_provisioned_users(tmp_path: Path) -> None:
    with (
        RedisProcess(tmp_path / "redis") as redis_process,
        KmsProcess(tmp_path / "kms", redis_process.url, identity=KMS_ID) as kms,
    ):
        psk_file = kms.add_user(ALICE)
        assert psk_file.stat().st_mode & 0o077 == 0
        client = KmsClient(kms.url, KMS_ID, ALICE, load_key_file(psk_file, "PSK"), timeout=5)
        desired = mikey_ticket.DesiredPolicy(recipients=(BOB,), valid_until=time.time() + 600)
        issued = asyncio.run(client.request_ticket(desired))
        assert BOB in issued.policy.recipients
        # An identity the KMS does not know is refused with a MIKEY error.
        stranger = KmsClient(kms.url, KMS_ID, BOB, b"\x00" * 32, timeout=5)
        with pytest.raises(KmsRefused):
            asyncio.run(stranger.request_ticket(desired))
        process = kms.process
    assert process is not None
    assert process.poll() is not None


def test_a_kms_without_redis_does_not_start_quietly(tmp_path: Path) -> None:
    kms = KmsProcess(tmp_path / "kms", "redis://127.0.0.1:1/0", deadline=10)
    try:
        kms.start()
    except ServiceError:
        return
    # It may start and answer 503 per request instead; then a user cannot be added.
    try:
        with pytest.raises(ServiceError, match="user add"):
            kms.add_user(ALICE)
    finally:
        kms.stop()
