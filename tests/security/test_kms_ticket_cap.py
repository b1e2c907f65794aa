"""One user cannot fill Redis with ticket records (issue 12, item 9): the real KMS process.

``secconf kms serve`` with ``[tickets] max_per_user = 3`` and ``record_margin = 0`` against
the session's Redis; users provisioned with ``secconf kms user add``; tickets asked for with
the project's KMS client.  Alice takes her three places; the fourth request is refused with
HTTP 403 and MIKEY error 12 and changes no key in Redis (DUMP and expiry time of every key
before and after); Bob is served all the while; the refusal is logged without key material;
once Alice's short-lived tickets have expired she is served again, up to the limit again.
"""

from __future__ import annotations

import asyncio
import base64
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from secconf.core.errors import MikeyErrorNo
from secconf.core.mikey import ticket as mt
from secconf.kms.async_client import KmsClient, KmsRefused
from secconf.store import generate_key_file, load_key_file
from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.slow

SECCONF = str(Path(sys.executable).parent / "secconf")
KMS_ID = "sip:kms.cap.invalid"
ALICE, BOB, CAROL = (f"sip:{name}@cap.invalid" for name in ("alice", "bob", "carol"))
CAP = 3
LIFETIME = 6.0  # seconds: long enough to fill the cap and be refused, short enough to wait out
START_DEADLINE = 20.0


@dataclass
class CappedKms:
    url: str
    prefix: str
    redis_url: str
    workdir: Path
    config: Path
    process: subprocess.Popen[str]
    log: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def add_user(self, identity: str) -> bytes:
        psk_file = self.workdir / (identity.split(":")[1].split("@")[0] + ".psk")
        result = subprocess.run(
            [SECCONF, "kms", "user", "add", identity, "--psk-file", str(psk_file),
             "--config", str(self.config)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return load_key_file(psk_file, "PSK")

    def wait_for_log(self, *parts: str, deadline: float = 5.0) -> str:
        """The first log line (from the start) holding every one of *parts*."""
        stop = time.monotonic() + deadline
        while True:
            for line in self.seen:
                if all(part in line for part in parts):
                    return line
            try:
                self.seen.append(self.log.get(timeout=max(0.0, min(0.1, stop - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() >= stop:
                    raise AssertionError(f"no log line with {parts}: {self.seen[-10:]}") from None

    def snapshot(self) -> dict[bytes, tuple[bytes | None, int]]:
        """Every key of this KMS: its DUMP and its expiry time in ms (-1: none)."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return {
                key: (client.dump(key), int(client.pexpiretime(key)))  # type: ignore[arg-type]
                for key in client.scan_iter(match=f"{self.prefix}:*", count=200)
            }
        finally:
            client.close()

    def index(self, identity: str) -> list[bytes]:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            return list(client.zrange(f"{self.prefix}:ticket-index:{identity}", 0, -1))  # type: ignore[arg-type]
        finally:
            client.close()


def _pump(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


@pytest.fixture(scope="module")
def capped_kms(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CappedKms]:
    redis_server.ensure_ready()
    workdir = tmp_path_factory.mktemp("kms-cap")
    kek = workdir / "kek"
    generate_key_file(kek)
    prefix = f"cap-{secrets.token_hex(4)}"
    config = workdir / "kms.toml"
    config.write_text(
        f'[kms]\nidentity = "{KMS_ID}"\nlisten = "127.0.0.1"\nport = 0\nkek_file = "{kek}"\n'
        "clock_skew = 60\nmax_ticket_lifetime = 3600\n\n"
        f'[redis]\nurl = "{redis_server.url}"\ntimeout = 0.5\nprefix = "{prefix}"\n\n'
        f"[tickets]\nmax_per_user = {CAP}\nrecord_margin = 0\n"
    )
    setpriv = shutil.which("setpriv")
    process = subprocess.Popen(
        [*([setpriv, "--pdeathsig", "TERM"] if setpriv else []),
         SECCONF, "kms", "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    running = CappedKms("", prefix, redis_server.url, workdir, config, process)
    threading.Thread(target=_pump, args=(process.stderr, running.log), daemon=True).start()
    try:
        line = running.wait_for_log("listening on", deadline=START_DEADLINE)
        running.url = "http://" + line.rsplit(" ", 1)[1].strip()
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ask(client: KmsClient, lifetime: float = LIFETIME) -> mt.IssuedTicket:
    desired = mt.DesiredPolicy(recipients=(CAROL,), valid_until=time.time() + lifetime)
    return asyncio.run(client.request_ticket(desired))


def test_a_user_over_the_cap_is_refused_and_redis_is_untouched(capped_kms: CappedKms) -> None:
    kms = capped_kms
    psks = {identity: kms.add_user(identity) for identity in (ALICE, BOB, CAROL)}
    alice = KmsClient(kms.url, KMS_ID, ALICE, psks[ALICE], timeout=5)
    bob = KmsClient(kms.url, KMS_ID, BOB, psks[BOB], timeout=5)
    assert kms.wait_for_log("tickets: at most 3 live per user")

    # Alice fills her places.
    issued = [_ask(alice) for _ in range(CAP)]
    last_expiry = max(ticket.policy.valid_until or 0.0 for ticket in issued)
    assert sorted(kms.index(ALICE)) == sorted(t.ticket_id.hex().encode() for t in issued)

    # One more: refused through the client and as raw HTTP, and no key changes.
    before = kms.snapshot()
    with pytest.raises(KmsRefused) as caught:
        _ask(alice)
    assert caught.value.error_no == MikeyErrorNo.UNSPECIFIED
    pending = mt.build_request_init(
        initiator=ALICE, kms=KMS_ID, psk=psks[ALICE],
        desired=mt.DesiredPolicy(recipients=(CAROL,), valid_until=time.time() + LIFETIME),
        now=time.time(), random_bytes=secrets.token_bytes,
    )  # fmt: skip
    answer = httpx.post(
        kms.url + "/mikey/v1/request",
        content=pending.data,
        headers={"content-type": "application/mikey"},
        timeout=5,
    )
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/mikey"
    assert answer.headers["secconf-mikey-error"] == str(int(MikeyErrorNo.UNSPECIFIED))
    assert "retry-after" not in answer.headers
    assert mt.read_error(answer.content) == (MikeyErrorNo.UNSPECIFIED,)
    after = kms.snapshot()
    assert time.time() < last_expiry, "too slow: Alice's tickets expired during the check"
    assert after == before

    # Bob is served all the while: his places are his own.
    for _ in range(CAP):
        assert _ask(bob).policy.initiator == BOB
    assert len(kms.index(ALICE)) == CAP

    # The refusal is logged, naming the user and the limit, never a key.
    line = kms.wait_for_log("REQUEST_INIT", "refused", "TicketLimitReached")
    assert ALICE in line
    assert f"{CAP} live tickets" in line
    log = "".join(kms.seen)
    for psk in psks.values():
        for form in (psk.hex(), psk.hex().upper(), base64.b64encode(psk).decode()):
            assert form not in log
    for ticket in issued:
        assert ticket.mpki.hex() not in log

    # Once her tickets have expired, Alice gets her places back: the cap again, and no more.
    time.sleep(max(0.0, last_expiry - time.time()) + 0.5)
    again = [_ask(alice) for _ in range(CAP)]
    assert sorted(kms.index(ALICE)) == sorted(t.ticket_id.hex().encode() for t in again)
    with pytest.raises(KmsRefused) as caught:
        _ask(alice)
    assert caught.value.error_no == MikeyErrorNo.UNSPECIFIED
