"""SrtpEndpoint pairs on loopback: audio really arrives, and only under the right key.

Each test runs its own event loop under a hard timeout; every wait inside has
one too.  The RFC 3711 test at the end decrypts what the endpoint sent with the
session keys of RFC 3711 Appendix B.3, computed independently with pyca/cryptography.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import tomllib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secconf.client.media import KeyMaterial, SrtpEndpoint
from secconf.core import rtp
from secconf.core.errors import UnsupportedCryptoSuite
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.core.sdes import SUITES
from secconf.srtp import SUPPORTED_SUITES
from tests.conftest import DATA

HOST = "127.0.0.1"
TONE = 1000


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def keys(suite: str = "AES_CM_128_HMAC_SHA1_80") -> KeyMaterial:
    info = SUITES[suite]
    return (suite, os.urandom(info.key_length), os.urandom(info.salt_length))


async def pair(
    a_tx: KeyMaterial, b_tx: KeyMaterial, *, b_rx: KeyMaterial | None = None
) -> tuple[SrtpEndpoint, SrtpEndpoint]:
    """A and B wired to each other; B receives with *b_rx* (default: A's sending key)."""
    a = await SrtpEndpoint.open(HOST, rtcp_interval=None)
    b = await SrtpEndpoint.open(HOST, rtcp_interval=None)
    a.set_remote(b.local_address)
    b.set_remote(a.local_address)
    a.set_keys(tx=a_tx, rx=b_tx)
    b.set_keys(tx=b_tx, rx=b_rx if b_rx is not None else a_tx)
    return a, b


async def settle(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until *condition* holds (packets still in flight on loopback), at most *timeout*."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def audio_of(received: list[Any]) -> list[int]:
    ordered = sorted(received, key=lambda r: r.packet.sequence_number)
    return ulaw_decode(b"".join(r.packet.payload for r in ordered))


# -- audio through SRTP ------------------------------------------------------------


@pytest.mark.parametrize("suite", sorted(SUPPORTED_SUITES))
def test_tone_arrives_under_srtp(suite: str) -> None:
    async def scenario() -> None:
        a, b = await pair(keys(suite), keys(suite))
        count = 100 if suite == "AES_CM_128_HMAC_SHA1_80" else 25
        sent = await a.send_audio(ToneGenerator(TONE).frames(count), ssrc=0x11111111)
        await settle(
            lambda: b.stats.get(0x11111111) is not None and b.stats[0x11111111].packets >= sent
        )
        received = b.drain()
        stats = b.stats[0x11111111]
        assert sent == count
        assert len(received) >= 0.95 * count
        assert stats.packets == len(received)
        assert stats.auth_failures == stats.replays == stats.old_epoch == 0
        assert all(r.packet.payload_type == 0 for r in received)
        assert received[0].packet.marker
        samples = audio_of(received)
        assert tone_ratio(samples, TONE) > 0.95
        assert tone_ratio(samples, 1500) < 0.01
        assert stats.highest_seq == received[-1].packet.sequence_number  # no wrap in 100
        await a.close()
        await b.close()

    run(scenario())


def test_wrong_key_is_an_auth_failure_and_delivers_nothing() -> None:
    async def scenario() -> None:
        a, b = await pair(keys(), keys(), b_rx=keys())
        sent = await a.send_audio(ToneGenerator(TONE).frames(30), ssrc=0x22222222)
        await settle(lambda: b.totals.auth_failures >= sent)
        stats = b.stats[0x22222222]
        assert stats.auth_failures == sent == 30
        assert stats.packets == 0
        assert b.drain() == []
        assert b.totals.packets == 0
        await a.close(bye=False)
        await b.close(bye=False)

    run(scenario())


def test_rekey_with_grace_window_loses_nothing_then_old_key_is_refused() -> None:
    async def scenario() -> None:
        old_a, b_tx, new_a = keys(), keys(), keys()
        a, b = await pair(old_a, b_tx)
        ssrc = 0x33333333
        sending = asyncio.create_task(a.send_audio(ToneGenerator(TONE).frames(100), ssrc))
        await asyncio.sleep(0.6)
        # The receiver accepts the new epoch first (its answer went out), the sender
        # switches 200 ms later: packets in between arrive under the old key.
        b.rekey(rx=new_a, grace=1.0)
        assert len(b.rx_epochs) == 2
        await asyncio.sleep(0.2)
        a.rekey(tx=new_a)
        sent = await asyncio.wait_for(sending, 5)
        await settle(lambda: b.stats[ssrc].packets >= sent)
        stats = b.stats[ssrc]
        assert stats.packets == sent == 100  # no loss across the switch
        assert stats.auth_failures == 0
        assert 5 <= stats.old_epoch <= 15  # about 10 packets in the 200 ms overlap
        received = b.drain()
        assert sum(r.old_epoch for r in received) == stats.old_epoch
        assert tone_ratio(audio_of(received), TONE) > 0.95

        await asyncio.sleep(1.0)  # grace window over
        assert len(b.rx_epochs) == 1
        late = await SrtpEndpoint.open(HOST, rtcp_interval=None)  # still on the old key
        late.set_remote(b.local_address)
        late.set_keys(tx=old_a, rx=b_tx)
        late_sent = await late.send_audio(ToneGenerator(TONE).frames(10), ssrc=0x33333334)
        await settle(lambda: b.totals.auth_failures >= late_sent)
        assert b.stats[0x33333334].auth_failures == late_sent
        assert b.stats[0x33333334].packets == 0
        assert b.drain() == []
        for endpoint in (a, b, late):
            await endpoint.close(bye=False)

    run(scenario())


class _Tap(asyncio.DatagramProtocol):
    """A wire between A and B that keeps a copy of every datagram (an attacker's view)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.seen: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a selector datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        assert self.transport is not None
        self.transport.sendto(data, self.target)


def test_replayed_packets_are_rejected() -> None:
    async def scenario() -> None:
        a, b = await pair(keys(), keys())
        loop = asyncio.get_running_loop()
        transport, tap = await asyncio.wait_for(
            loop.create_datagram_endpoint(lambda: _Tap(b.local_address), local_addr=(HOST, 0)),
            5,
        )
        a.set_remote(transport.get_extra_info("sockname"))
        sent = await a.send_audio(ToneGenerator(TONE).frames(20), ssrc=0x44444444)
        await settle(lambda: b.stats[0x44444444].packets >= sent)
        assert b.stats[0x44444444].packets == 20
        b.drain()
        for datagram in tap.seen[:5] + tap.seen[-3:]:
            transport.sendto(datagram, b.local_address)
        await settle(lambda: b.stats[0x44444444].replays >= 8)
        stats = b.stats[0x44444444]
        assert stats.replays == 8
        assert stats.packets == 20
        assert stats.auth_failures == 0
        assert b.drain() == []
        # A tampered copy of a fresh-looking packet fails authentication instead.
        forged = bytearray(tap.seen[-1])
        forged[3] ^= 0x40  # sequence number moves ahead
        transport.sendto(bytes(forged), b.local_address)
        await settle(lambda: b.stats[0x44444444].auth_failures >= 1)
        assert stats.auth_failures == 1
        transport.close()
        await a.close(bye=False)
        await b.close(bye=False)

    run(scenario())


def test_srtcp_reports_both_ways() -> None:
    async def scenario() -> None:
        a, b = await pair(keys(), keys())
        ssrc = 0x55555555
        sent = await a.send_audio(ToneGenerator(TONE).frames(20), ssrc)
        await settle(lambda: b.stats[ssrc].packets >= sent)
        assert a.send_rtcp() == 1
        await settle(lambda: b.stats[ssrc].rtcp_packets >= 1)
        sr, sdes = b.stats[ssrc].last_rtcp
        assert isinstance(sr, rtp.SenderReport)
        assert sr.ssrc == ssrc
        assert sr.sender_info.packet_count == 20
        assert sr.sender_info.octet_count == 20 * 160
        assert isinstance(sdes, rtp.SourceDescription)
        assert sdes.chunks[0].cname == a.cname

        assert b.send_rtcp() == 1  # B sends nothing: an RR about A's stream
        await settle(lambda: b.ssrc in a.stats and a.stats[b.ssrc].rtcp_packets >= 1)
        rr = a.stats[b.ssrc].last_rtcp[0]
        assert isinstance(rr, rtp.ReceiverReport)
        (block,) = rr.reports
        assert block.ssrc == ssrc
        assert block.highest_sequence == b.stats[ssrc].highest_seq
        assert block.cumulative_lost == 0
        assert block.lsr == rtp.ntp_to_compact(sr.sender_info.ntp_timestamp)

        await a.close()  # final SR + BYE
        await settle(lambda: any(isinstance(p, rtp.Bye) for p in b.stats[ssrc].last_rtcp))
        assert isinstance(b.stats[ssrc].last_rtcp[-1], rtp.Bye)
        await b.close()

    run(scenario())


def test_periodic_rtcp_is_sent() -> None:
    async def scenario() -> None:
        a = await SrtpEndpoint.open(HOST, rtcp_interval=0.1)
        b = await SrtpEndpoint.open(HOST, rtcp_interval=None)
        a.set_remote(b.local_address)
        a_tx = keys()
        a.set_keys(tx=a_tx, rx=keys())
        b.set_keys(tx=keys(), rx=a_tx)
        await settle(lambda: a.rtcp_sent >= 3)
        assert a.rtcp_sent >= 3
        assert b.stats[a.ssrc].rtcp_packets >= 2
        await a.close(bye=False)
        await b.close(bye=False)

    run(scenario())


# -- configuration errors and hygiene ------------------------------------------------


@pytest.mark.parametrize(
    "suite", ["F8_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32", "NULL"]
)
def test_unsupported_suites_are_refused(suite: str) -> None:
    async def scenario() -> None:
        endpoint = await SrtpEndpoint.open(HOST, rtcp_interval=None)
        material = (suite, bytes(32), bytes(14))
        with pytest.raises(UnsupportedCryptoSuite, match="not supported"):
            endpoint.set_keys(tx=material, rx=keys())
        await endpoint.close(bye=False)

    run(scenario())


def test_wrong_key_length_is_refused_without_quoting_the_key() -> None:
    async def scenario() -> None:
        endpoint = await SrtpEndpoint.open(HOST, rtcp_interval=None)
        secret = b"S" * 15
        with pytest.raises(ValueError, match="16-byte key") as caught:
            endpoint.set_keys(tx=("AES_CM_128_HMAC_SHA1_80", secret, bytes(14)), rx=keys())
        assert "SSSS" not in str(caught.value)
        await endpoint.close(bye=False)

    run(scenario())


def test_suite_objects_are_accepted_and_keys_stay_out_of_repr() -> None:
    async def scenario() -> None:
        suite = SUITES["AES_CM_128_HMAC_SHA1_32"]
        key, salt = b"K" * 16, b"Z" * 14
        a, b = await pair((suite, key, salt), (suite, key, salt))
        await a.send_audio([bytes(160)] * 3, ssrc=7)
        await settle(lambda: 7 in b.stats and b.stats[7].packets >= 3)
        for text in (repr(a), repr(b), repr(b.stats), repr(b.drain())):
            assert "KKKK" not in text
            assert "ZZZZ" not in text
            assert key.hex() not in text
        await a.close(bye=False)
        await b.close(bye=False)

    run(scenario())


def test_garbage_datagrams_are_counted_not_raised() -> None:
    async def scenario() -> None:
        a, b = await pair(keys(), keys())
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0)
        )
        for junk in (
            b"",
            b"\x00\x01",
            b"\x16\xfe\xfd" + bytes(20),
            b"\x80\x00" + bytes(5),
            os.urandom(200),
        ):
            transport.sendto(junk, b.local_address)
        await a.send_audio([bytes(160)], ssrc=9)
        await settle(lambda: 9 in b.stats and b.stats[9].packets >= 1)
        assert b.stats[9].packets == 1
        assert b.foreign + b.totals.auth_failures + b.totals.malformed + b.totals.replays >= 3
        transport.close()
        await a.close(bye=False)
        await b.close(bye=False)

    run(scenario())


# -- RFC 3711 Appendix B.3: our keys, libsrtp's derivation, checked by hand ----------

VECTORS = tomllib.loads((DATA / "vectors" / "rfc3711-appendix-b.toml").read_text())[
    "b3_key_derivation"
]


def _aes_ctr(key: bytes, iv: int, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    # RFC 3711 §4.3.1 with kdr = 0: AES-CM keystream at IV ((label << 48) ^ salt) << 16.
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return _aes_ctr(master_key, x << 16, bytes(length))


def test_rfc3711_b3_keys_decrypt_what_the_endpoint_sent() -> None:
    master_key = bytes.fromhex(VECTORS["master_key"])
    master_salt = bytes.fromhex(VECTORS["master_salt"])
    cipher_key = bytes.fromhex(VECTORS["cipher_key"])
    cipher_salt = bytes.fromhex(VECTORS["cipher_salt"])
    auth_key = bytes.fromhex(VECTORS["auth_key"])[:20]  # HMAC-SHA1 uses n_a = 160 bits (§8.2)
    assert _derive(master_key, master_salt, 0x00, 16) == cipher_key  # our derivation is B.3's

    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        captured: list[bytes] = []

        class Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                captured.append(data)

        transport, _ = await loop.create_datagram_endpoint(Sink, local_addr=(HOST, 0))
        endpoint = await SrtpEndpoint.open(HOST, rtcp_interval=None)
        endpoint.set_remote(transport.get_extra_info("sockname"))
        endpoint.set_keys(tx=("AES_CM_128_HMAC_SHA1_80", master_key, master_salt), rx=keys())
        await endpoint.send_audio(ToneGenerator(TONE).frames(3), ssrc=0xCAFEBABE)
        endpoint.send_rtcp()
        await settle(lambda: len(captured) >= 4)
        await endpoint.close(bye=False)
        transport.close()
        return captured

    captured: list[bytes] = []

    async def collect() -> None:
        captured.extend(await scenario())

    run(collect())
    srtp_packets = [d for d in captured if rtp.classify(d) is rtp.PacketKind.RTP]
    srtcp = next(d for d in captured if rtp.classify(d) is rtp.PacketKind.RTCP)
    assert len(srtp_packets) == 3
    salt = int.from_bytes(cipher_salt, "big")
    for index, datagram in enumerate(srtp_packets):
        header = rtp.RtpPacket.parse(datagram[:-10])  # 10-byte tag (RFC 4568 §6.2.1)
        body, tag = datagram[12:-10], datagram[-10:]
        # §3.3.1: ROC 0 at the start, packet index i = seq; §4.1.1 IV.
        iv = (salt << 16) ^ (header.ssrc << 64) ^ (header.sequence_number << 16)
        assert _aes_ctr(cipher_key, iv, body) == ToneGenerator(TONE).frame(index)
        # §4.2: HMAC-SHA1 over the authenticated portion || ROC, truncated to 80 bits.
        mac = hmac.new(auth_key, datagram[:-10] + bytes(4), hashlib.sha1).digest()[:10]
        assert hmac.compare_digest(mac, tag)

    # SRTCP (§3.4): labels 3, 4, 5 for its keys; E flag + 31-bit index, then the tag.
    rtcp_key = _derive(master_key, master_salt, 0x03, 16)
    rtcp_auth = _derive(master_key, master_salt, 0x04, 20)
    rtcp_salt = int.from_bytes(_derive(master_key, master_salt, 0x05, 14), "big")
    e_index = int.from_bytes(srtcp[-14:-10], "big")
    assert e_index >> 31 == 1  # encrypted
    index = e_index & 0x7FFFFFFF
    ssrc = int.from_bytes(srtcp[4:8], "big")
    iv = (rtcp_salt << 16) ^ (ssrc << 64) ^ (index << 16)
    plain = srtcp[:8] + _aes_ctr(rtcp_key, iv, srtcp[8:-14])
    sr, _ = rtp.parse_rtcp(plain)
    assert isinstance(sr, rtp.SenderReport)
    assert sr.ssrc == 0xCAFEBABE
    assert sr.sender_info.packet_count == 3
    mac = hmac.new(rtcp_auth, srtcp[:-10], hashlib.sha1).digest()[:10]
    assert hmac.compare_digest(mac, srtcp[-10:])


# -- opened(): a capture that starts after the sender's sequence number wrapped --------------


def _sent(material: KeyMaterial, first_seq: int, count: int) -> list[bytes]:
    """*count* SRTP packets of one sender from *first_seq* on (wrapping at 65536)."""
    from secconf.srtp import srtp_session

    suite, key, salt = material
    sender = srtp_session(suite, key, salt, inbound=False)
    return [
        sender.protect(
            bytes([0x80, 0]) + ((first_seq + i) % 65536).to_bytes(2, "big")
            + (160 * i).to_bytes(4, "big") + b"\x12\x34\x56\x78" + b"\xff" * 160
        )
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize(("first_seq", "wraps_before"), [(100, 0), (65500, 0), (65500, 1), (7, 2)])
def test_opened_finds_the_rollover_a_capture_did_not_see(first_seq: int, wraps_before: int) -> None:
    from secconf.client.media import inbound_session, opened, opens

    material = keys()
    # The sender wrapped *wraps_before* times before the capture's first packet (and the
    # capture from 65500 on crosses one more wrap of its own).
    start = 65536 * wraps_before
    capture = _sent(material, first_seq, start + 200)[start:]
    assert all(opened(material, capture))
    assert not any(opened(keys(), capture))  # another key opens nothing, whatever the guess
    if (first_seq + start) // 65536 >= 1:
        # What a fresh receiver per packet (ROC 0) makes of it: nothing opens.
        assert not any(opens(inbound_session(material), packet) for packet in capture)
