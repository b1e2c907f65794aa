"""The media edge on loopback: real sockets, real pylibsrtp on both ends, a fake Asterisk.

Each test runs its own event loop (``asyncio.run``) under a hard timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pylibsrtp
import pytest

from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.media.keys import session
from tests.media.edge_harness import (
    HOST,
    EdgeUnderTest,
    FakeAsterisk,
    RawParticipant,
    join,
    key_json,
    new_key,
    participant,
    rtp_packet,
    settle,
)


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def _frames(freq: float, count: int) -> list[bytes]:
    tone = ToneGenerator(freq)
    return [tone.frame(160) for _ in range(count)]


def _tone_of(payload: bytes, freqs: tuple[float, ...]) -> float | None:
    samples = ulaw_decode(payload)
    for freq in freqs:
        if tone_ratio(samples, freq) > 0.9:
            return freq
    return None


@pytest.mark.parametrize(
    ("mode", "internal", "count"),
    [("sdes", "rtp", 2), ("kms", "srtp", 3), ("sdes", "srtp", 3)],
)
def test_participants_exchange_audio_through_the_edge(mode: str, internal: str, count: int) -> None:
    """Every participant hears every other one, decrypting with exactly the keys it was given."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=True)
        endpoints = []
        try:
            group = new_key()
            await edge.put_epoch("conf-a", 1, group)
            answers = []
            for _ in range(count):
                own = new_key()
                body: dict[str, Any] = {"mode": mode, "internal": internal}
                if mode == "sdes":
                    body["participant"] = key_json(own)
                answer = await edge.leg("conf-a", **body)
                answers.append(answer)
                tx = own if mode == "sdes" else group
                endpoints.append(await participant(answer, tx, group, rtcp_interval=None))
                await asterisk.attach(edge, answer)
            freqs = tuple(600.0 + 350 * i for i in range(count))
            sends = [
                endpoint.send_audio(_frames(freq, 40), endpoint.ssrc)
                for endpoint, freq in zip(endpoints, freqs, strict=True)
            ]
            assert await asyncio.gather(*sends) == [40] * count
            expected = 40 * (count - 1)
            assert await settle(lambda: all(len(e.queue._queue) >= expected for e in endpoints))  # type: ignore[union-attr]
            for index, (endpoint, answer) in enumerate(zip(endpoints, answers, strict=True)):
                received = endpoint.drain()
                assert len(received) == expected
                # under the leg's unique SSRC, decrypted with the group key
                assert {r.packet.ssrc for r in received} == {answer["ssrc"]}
                heard = [_tone_of(r.packet.payload, freqs) for r in received]
                others = {f for i, f in enumerate(freqs) if i != index}
                assert set(heard) == others
                assert endpoint.totals.auth_failures == 0
            assert len({a["ssrc"] for a in answers}) == count
            conference = await edge.conference("conf-a")
            assert conference["counters"]["rtp_in"] == 40 * count
            assert conference["counters"]["rtp_out"] == expected * count
            assert conference["counters"]["auth_failures"] == 0
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


@pytest.mark.slow
def test_rekey_mid_stream_loses_no_packet() -> None:
    """50 packets/s each way per leg; epoch 2 arrives and each leg switches at its answer.

    The participants behave like linphone: the receive key changes the moment
    the answer goes out, with no overlap (grace 0), and (KMS mode) the sending
    key changes with it.  Not one packet may be lost in either direction.
    """

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        endpoints = []
        try:
            g1, g2 = new_key(), new_key()
            await edge.put_epoch("conf-r", 1, g1)
            answers = [await edge.leg("conf-r", mode="kms", internal="rtp") for _ in range(2)]
            for answer in answers:
                endpoint = await participant(answer, g1, g1, rtcp_interval=None)
                endpoints.append(endpoint)
                remote = {"host": HOST, "port": endpoint.local_address[1]}
                await edge.call("PUT", f"/v1/legs/{answer['leg']}/participant-remote", remote)
                await asterisk.attach(edge, answer)
            seconds = 3.0
            for answer in answers:
                asterisk.generate(answer["leg"], seconds)
            sending = [
                asyncio.ensure_future(
                    e.send_audio((ToneGenerator(500).frame(160) for _ in range(150)), e.ssrc)
                )
                for e in endpoints
            ]
            await asyncio.sleep(1.0)
            await edge.put_epoch("conf-r", 2, g2)
            relay = edge.edge.service.relay
            for endpoint, answer in zip(endpoints, answers, strict=True):
                await asyncio.sleep(0.4)
                # the 200 OK: the phone switches as it sends it, the edge as it passes
                endpoint.rekey(
                    tx=(g2.suite, g2.key, g2.salt), rx=(g2.suite, g2.key, g2.salt), grace=0
                )
                assert relay.switch(answer["leg"], 2)
            sent = await asyncio.gather(*sending)
            await asterisk.wait()
            channels = [asterisk.channels[a["leg"]] for a in answers]
            assert await settle(
                lambda: (
                    all(
                        len(e.queue._queue) >= c.sent
                        for e, c in zip(endpoints, channels, strict=True)
                    )  # type: ignore[union-attr]
                    and all(len(c.received) >= n for c, n in zip(channels, sent, strict=True))
                )
            )
            for endpoint, channel, count in zip(endpoints, channels, sent, strict=True):
                received = endpoint.drain()
                assert channel.sent == 150
                assert len(received) == channel.sent
                assert endpoint.totals.auth_failures == 0
                assert endpoint.totals.replays == 0
                assert len(channel.received) == count == 150
                seqs = [r.packet.sequence_number for r in received]
                assert len(set(seqs)) == len(seqs)
            conference = await edge.conference("conf-r")
            assert conference["counters"]["auth_failures"] == 0
            assert conference["counters"]["epoch_switches"] == 2
            assert all(leg["epoch"] == 2 for leg in conference["legs"])
            # epoch 1 is destroyed one grace window after the last leg left it
            assert await settle(lambda: 1 not in relay.conferences["conf-r"].keys, timeout=2.0)
            assert [e["epoch"] for e in (await edge.conference("conf-r"))["epochs"]] == [2]
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_receiver_that_never_switches_is_detected() -> None:
    """baresip 1.0.0 keeps its old receive key: its reports stall and the edge says so.

    The linphone-like leg switches and restarts its SRTCP index under its
    unchanged sending key, which the edge tolerates (not counted as a replay).
    """

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        endpoints = []
        try:
            g1, g2 = new_key(), new_key()
            await edge.put_epoch("conf-v", 1, g1)
            keys = [new_key(), new_key()]
            answers = []
            for own in keys:
                answer = await edge.leg("conf-v", mode="sdes", participant=key_json(own))
                answers.append(answer)
                endpoints.append(await participant(answer, own, g1, rtcp_interval=0.4))
                await asterisk.attach(edge, answer)
                asterisk.generate(answer["leg"], 6.0)
            linphone, baresip = endpoints
            assert await settle(lambda: min(e.rtcp_sent for e in endpoints) >= 3, timeout=4)
            await edge.put_epoch("conf-v", 2, g2)
            started = asyncio.get_running_loop().time()
            new = (g2.suite, g2.key, g2.salt)
            own_key = (keys[0].suite, keys[0].key, keys[0].salt)
            linphone.rekey(rx=new, tx=own_key, grace=0)  # new SRTCP index, same key
            relay = edge.edge.service.relay
            relay.switch(answers[0]["leg"], 2)
            relay.switch(answers[1]["leg"], 2)  # baresip answered 200 OK ... and did not switch

            async def states() -> dict[str, str]:
                conference = await edge.conference("conf-v")
                return {leg["leg"]: leg["switch"]["state"] for leg in conference["legs"]}

            while True:
                current = await states()
                if "pending" not in current.values():
                    break
                assert asyncio.get_running_loop().time() - started < 5.0, current
                await asyncio.sleep(0.05)
            elapsed = asyncio.get_running_loop().time() - started
            assert current == {answers[0]["leg"]: "followed", answers[1]["leg"]: "not-followed"}
            assert elapsed < 3.0
            legs = {leg["leg"]: leg for leg in (await edge.conference("conf-v"))["legs"]}
            assert legs[answers[1]["leg"]]["switch"]["reason"] == "stalled"
            assert legs[answers[0]["leg"]]["counters"]["srtcp_restarts"] == 1
            assert legs[answers[0]["leg"]]["counters"]["replays"] == 0
            assert baresip.totals.auth_failures > 0  # it really could not decrypt
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_departed_leg_gets_nothing_and_cannot_read_the_new_epoch() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=True)
        raw = RawParticipant()
        endpoints = []
        try:
            g1, g2 = new_key(), new_key()
            await edge.put_epoch("conf-d", 1, g1)
            # A: raw socket (we look at its ciphertext); B, C: SrtpEndpoints
            key_a = new_key()
            answer_a = await edge.leg(
                "conf-d",
                mode="sdes",
                participant=key_json(key_a),
                participant_remote={"host": HOST, "port": raw.address[1]},
            )
            await asterisk.attach(edge, answer_a)
            answers = []
            for _ in range(2):
                own = new_key()
                answer, endpoint = await join(
                    edge, asterisk, "conf-d", tx=own, rx=g1, participant=key_json(own)
                )
                answers.append(answer)
                endpoints.append(endpoint)
            b, c = endpoints
            await b.send_audio((b"\xff" * 160 for _ in range(5)), b.ssrc)
            assert await settle(lambda: len(c.queue._queue) == 5)  # type: ignore[union-attr]
            c.drain()
            await edge.call("DELETE", f"/v1/legs/{answers[1]['leg']}")
            c_channel = asterisk.channels[answers[1]["leg"]]
            before = len(c_channel.received)
            raw.datagrams.clear()
            # B talks on; C (departed) keeps sending too
            await asyncio.gather(
                b.send_audio((b"\xff" * 160 for _ in range(10)), b.ssrc),
                c.send_audio((b"\xfe" * 160 for _ in range(10)), c.ssrc),
            )
            assert await settle(lambda: len(raw.datagrams) >= 10)
            await asyncio.sleep(0.2)
            assert c.drain() == []
            assert c.totals.packets == 5
            assert len(c_channel.received) == before  # and nothing of C's was relayed
            # rekey the remaining legs; A's traffic is then unreadable with C's epoch-1 key
            await edge.put_epoch("conf-d", 2, g2)
            for answer in (answer_a, answers[0]):
                await edge.call("POST", f"/v1/legs/{answer['leg']}/switch", {"epoch": 2})
            raw.datagrams.clear()
            await b.send_audio((b"\xff" * 160 for _ in range(10)), b.ssrc)
            assert await settle(lambda: len(raw.datagrams) >= 10)
            old, fresh = session(g1, inbound=True), session(g2, inbound=True)
            for datagram in raw.datagrams:
                with pytest.raises(pylibsrtp.Error):
                    old.unprotect(datagram)
                assert fresh.unprotect(datagram)[12:] == b"\xff" * 160
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            raw.close()
            asterisk.close()
            await edge.close()

    run(scenario())


def test_outbound_ssrcs_unique_and_keystreams_differ() -> None:
    """Same group key, same plaintext, same sequence numbers: the ciphertexts still differ (R4)."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        raws = [RawParticipant() for _ in range(4)]
        try:
            group = new_key()
            await edge.put_epoch("conf-k", 1, group)
            answers, channels = [], []
            for raw in raws:
                answer = await edge.leg(
                    "conf-k",
                    mode="sdes",
                    participant=key_json(new_key()),
                    participant_remote={"host": HOST, "port": raw.address[1]},
                )
                answers.append(answer)
                channel = await asterisk.attach(edge, answer)
                channel.seq, channel.timestamp, channel.ssrc = 1000, 5000, 0x11111111
                channels.append(channel)
            assert len({a["ssrc"] for a in answers}) == len(answers)
            payload = bytes(range(160))
            for _ in range(5):
                for channel in channels:
                    channel.send(payload)
            assert await settle(lambda: all(len(r.datagrams) == 5 for r in raws))
            for index in range(5):
                bodies = [raw.datagrams[index][12:-10] for raw in raws]
                assert len(set(bodies)) == len(bodies)  # no two keystreams alike
            for raw, answer in zip(raws, answers, strict=True):
                rx = session(group, inbound=True)
                for datagram in raw.datagrams:
                    plain = rx.unprotect(datagram)
                    assert plain[12:] == payload
                    assert int.from_bytes(plain[8:12], "big") == answer["ssrc"]
        finally:
            for raw in raws:
                raw.close()
            asterisk.close()
            await edge.close()

    run(scenario())


def test_ssrc_collisions_are_refused_and_reported() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        endpoints = []
        try:
            group = new_key()
            await edge.put_epoch("conf-s", 1, group)
            answers = []
            for _ in range(2):
                own = new_key()
                answer, endpoint = await join(
                    edge, asterisk, "conf-s", tx=own, rx=group, participant=key_json(own)
                )
                answers.append(answer)
                endpoints.append(endpoint)
            a, b = endpoints
            # declared (a=ssrc) SSRC equal to an outbound one: refused, nothing recorded
            before = await edge.conference("conf-s")
            refused = await edge.http.post(
                "/v1/legs",
                json={
                    "conference": "conf-s",
                    "participant": key_json(new_key()),
                    "participant_ssrcs": [answers[0]["ssrc"]],
                },
            )
            assert refused.status_code == 409
            after = await edge.conference("conf-s")
            assert len(after["legs"]) == len(before["legs"]) == 2
            assert after["collisions"][-1]["owner_direction"] == "outbound"
            # B starts sending under A's SSRC: authenticated, but never relayed
            shared = 0x0BADCAFE
            await a.send_audio((b"\xff" * 160 for _ in range(5)), shared)
            await b.send_audio((b"\xfe" * 160 for _ in range(5)), shared)
            channel_a = asterisk.channels[answers[0]["leg"]]
            channel_b = asterisk.channels[answers[1]["leg"]]
            assert await settle(lambda: len(channel_a.received) == 5)
            await asyncio.sleep(0.1)
            assert channel_b.received == []
            conference = await edge.conference("conf-s")
            legs = {leg["leg"]: leg for leg in conference["legs"]}
            assert legs[answers[1]["leg"]]["counters"]["ssrc_refused"] == 5
            assert legs[answers[0]["leg"]]["participant_ssrcs"] == [shared]
            collision = conference["collisions"][-1]
            assert (collision["ssrc"], collision["leg"], collision["owner_leg"]) == (
                shared,
                answers[1]["leg"],
                answers[0]["leg"],
            )
        finally:
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_bad_input_is_dropped_counted_and_never_relayed() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        phone, stranger = RawParticipant(), RawParticipant()
        try:
            group, own = new_key(), new_key()
            await edge.put_epoch("conf-b", 1, group)
            answer = await edge.leg("conf-b", mode="sdes", participant=key_json(own))
            channel = await asterisk.attach(edge, answer)
            to = (answer["participant"]["host"], answer["participant"]["port"])
            tx = session(own, inbound=False)
            wrong = session(new_key(), inbound=False)
            first = tx.protect(rtp_packet(0x1234, 1, b"\x01" * 160))
            phone.send(b"\x00garbage", to)  # not RTP: malformed
            phone.send(rtp_packet(0x1234, 7, b"\x02" * 160), to)  # plain RTP: fails auth
            phone.send(wrong.protect(rtp_packet(0x1234, 2, b"\x03" * 160)), to)  # wrong key
            phone.send(b"\x80" + b"\x00" * 1999, to)  # oversized
            phone.send(first, to)  # good: latches the phone's address
            assert await settle(lambda: len(channel.received) == 1)
            phone.send(first, to)  # replay
            stranger.send(tx.protect(rtp_packet(0x1234, 3, b"\x04" * 160)), to)  # unlatched
            channel.sock.sendto(b"\x80" * 20, to)  # Asterisk's socket to the participant side
            other = RawParticipant()
            other.send(
                rtp_packet(1, 1, b"x" * 160),
                answer["internal"]["host"]
                and (answer["internal"]["host"], answer["internal"]["port"]),
            )  # internal, wrong source
            await asyncio.sleep(0.2)
            assert [p for _, _, p in channel.received] == [b"\x01" * 160]
            counters = (await edge.conference("conf-b"))["legs"][0]["counters"]
            assert counters["malformed"] == 1
            assert counters["auth_failures"] == 2
            assert counters["oversized"] == 1
            assert counters["replays"] == 1
            assert counters["unlatched"] == 2
            assert counters["internal_unlatched"] == 1
            assert counters["rtp_in"] == 1
            # everything that went to the phone is SRTP under the group key
            channel.send(b"\x05" * 160)
            assert await settle(lambda: len(phone.datagrams) == 1)
            rx = session(group, inbound=True)
            assert rx.unprotect(phone.datagrams[0])[12:] == b"\x05" * 160
            assert b"\x05" * 16 not in phone.datagrams[0]
            other.close()
            metrics = await edge.http.get("/metrics")
            assert metrics.status_code == 200
            assert 'secconf_edge_auth_failures_total{side="participant"} 2' in metrics.text
            assert "secconf_edge_replays_total 1" in metrics.text
        finally:
            phone.close()
            stranger.close()
            asterisk.close()
            await edge.close()

    run(scenario())
