"""Legs without rtcp-mux: RTCP on its own port, both sides (RFC 3550 §11, RFC 3605).

Real loopback sockets and real pylibsrtp at every end.  A non-mux participant is
an SrtpEndpoint for RTP plus an :class:`RtcpPort` carrying the endpoint's own
reports; the fake Asterisk has an RTCP socket on its RTP port + 1.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from secconf.core import rtp
from secconf.core.g711 import ToneGenerator, tone_ratio, ulaw_decode
from secconf.media.keys import session
from secconf.media.sockets import PortAllocator
from secconf.store import generate_key_file
from tests.media.edge_harness import (
    HOST,
    EdgeUnderTest,
    FakeAsterisk,
    RawParticipant,
    RedisLink,
    RtcpPort,
    edge_config,
    join,
    join_non_mux,
    key_json,
    new_key,
    participant,
    redis_settings,
    rtp_packet,
    settle,
    udp_socket,
)
from tests.store.aio import client


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def sender_report(ssrc: int, cname: bytes = b"asterisk") -> bytes:
    info = rtp.SenderInfo(0x1234_5678_9ABC_DEF0, 1000, 10, 1600)
    return rtp.build_compound(
        [
            rtp.SenderReport(ssrc, info),
            rtp.SourceDescription((rtp.SdesChunk(ssrc, ((rtp.SDES_CNAME, cname),)),)),
        ]
    )


def _tone_heard(payloads: list[bytes], freq: float) -> bool:
    return bool(payloads) and all(tone_ratio(ulaw_decode(p), freq) > 0.9 for p in payloads)


def _reports(compound: bytes) -> list[rtp.ReportBlock]:
    blocks: list[rtp.ReportBlock] = []
    for packet in rtp.parse_rtcp(compound, strict=False):
        if isinstance(packet, rtp.SenderReport | rtp.ReceiverReport):
            blocks.extend(packet.reports)
    return blocks


def test_mixed_conference_mux_and_non_mux_legs() -> None:
    """A muxed and a non-mux leg hear each other; each one's RTCP takes its own way.

    The non-mux leg's reports travel phone RTCP port -> edge RTCP port -> Asterisk's
    RTCP port (SRTP internal side: SRTCP there too), with the block about the
    edge's SSRC rewritten to Asterisk's; Asterisk's SR comes back to the phone's
    RTCP port under the group key and the edge's SSRC.  Nothing of it touches
    the RTP sockets.
    """

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=True)
        closing: list[Any] = []
        try:
            group, own_m, own_n = new_key(), new_key(), new_key()
            await edge.put_epoch("conf-m", 1, group)
            answer_m, ep_m = await join(
                edge, asterisk, "conf-m", tx=own_m, rx=group, participant=key_json(own_m)
            )
            closing.append(ep_m)
            answer_n, ep_n, rtcp_n = await join_non_mux(
                edge, asterisk, "conf-m", tx=own_n, rx=group, participant=key_json(own_n),
                internal="srtp",
            )  # fmt: skip
            closing += [ep_n, rtcp_n]
            # the answers: old fields as they were, RTCP ports added
            for side in ("participant", "internal"):
                muxed = answer_m[side]
                assert muxed["rtcp_mux"] is True
                assert muxed["rtcp_port"] == muxed["port"] == muxed["rtp_port"]
                own = answer_n[side]
                assert own["rtcp_mux"] is False
                assert own["port"] == own["rtp_port"]
                assert own["port"] % 2 == 0
                assert own["rtcp_port"] == own["port"] + 1
            assert answer_n["external"]["ports"] == [answer_n["participant"]["port"]]
            assert answer_n["external"]["rtcp_port"] == answer_n["participant"]["rtcp_port"]
            channel_m = asterisk.channels[answer_m["leg"]]
            channel_n = asterisk.channels[answer_n["leg"]]
            # audio both ways, each hears the other
            tone_m, tone_n = ToneGenerator(600), ToneGenerator(1300)
            sent = await asyncio.gather(
                ep_m.send_audio([tone_m.frame(160) for _ in range(30)], ep_m.ssrc),
                ep_n.send_audio([tone_n.frame(160) for _ in range(30)], ep_n.ssrc),
            )
            assert sent == [30, 30]
            assert await settle(lambda: ep_m.totals.packets == 30 and ep_n.totals.packets == 30)
            heard_m = [r.packet for r in ep_m.drain()]
            heard_n = [r.packet for r in ep_n.drain()]
            assert _tone_heard([p.payload for p in heard_m], 1300)
            assert _tone_heard([p.payload for p in heard_n], 600)
            assert {p.ssrc for p in heard_n} == {answer_n["ssrc"]}
            # non-mux participant -> Asterisk: on the RTCP ports only
            assert rtcp_n.send_reports(ep_n) == 1
            assert await settle(lambda: len(channel_n.rtcp) == 1)
            forwarded = rtp.parse_rtcp(channel_n.rtcp[0])
            assert isinstance(forwarded[0], rtp.SenderReport)
            assert forwarded[0].ssrc == ep_n.ssrc
            blocks = _reports(channel_n.rtcp[0])
            assert [b.ssrc for b in blocks] == [channel_n.ssrc]  # edge SSRC -> Asterisk's
            # Asterisk -> non-mux participant: its RTCP port, group key, the edge's SSRC
            channel_n.send_rtcp(sender_report(channel_n.ssrc))
            assert await settle(lambda: len(rtcp_n.received) == 1)
            back = rtp.parse_rtcp(rtcp_n.received[0])
            assert isinstance(back[0], rtp.SenderReport)
            assert back[0].ssrc == answer_n["ssrc"]
            assert isinstance(back[1], rtp.SourceDescription)
            assert back[1].chunks[0].ssrc == answer_n["ssrc"]
            assert rtcp_n.errors == 0
            assert channel_n.rtcp_errors == 0
            # the muxed leg still muxes
            assert ep_m.send_rtcp() == 1
            assert await settle(lambda: channel_m.received_rtcp == 1)
            channel_m.send_rtcp(sender_report(channel_m.ssrc))
            assert await settle(lambda: sum(s.rtcp_packets for s in ep_m.stats.values()) == 1)
            await asyncio.sleep(0.1)
            assert channel_n.received_rtcp == 0  # nothing RTCP on the RTP sockets
            assert sum(s.rtcp_packets for s in ep_n.stats.values()) == 0
            assert ep_n.foreign == 0
            assert ep_n.totals.malformed == 0
            # latching: RTP and RTCP sources each on their own
            leg = await edge.call("GET", f"/v1/legs/{answer_n['leg']}")
            assert leg["rtcp_mux"] == {"participant": False, "internal": False}
            assert leg["latched"] == {"host": HOST, "port": ep_n.local_address[1]}
            assert leg["rtcp_latched"] == {"host": HOST, "port": rtcp_n.address[1]}
            assert leg["participant_rtcp"]["port"] == answer_n["participant"]["rtcp_port"]
            assert leg["internal_rtcp_remote"] == {"host": HOST, "port": channel_n.address[1] + 1}
            counters = leg["counters"]
            assert counters["rtcp_in"] == 1
            assert counters["rtcp_out"] == 1
            assert counters["auth_failures"] == counters["malformed"] == 0
            assert counters["wrong_port"] == counters["unlatched"] == 0
        finally:
            for item in closing:
                if isinstance(item, RtcpPort):
                    item.close()
                else:
                    await item.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_switch_verification_reads_reports_from_the_separate_rtcp_port() -> None:
    """Three legs switch to epoch 2: a muxed linphone-like one, a non-mux one that
    follows (and restarts its SRTCP index on its own port, like linphone), and a
    non-mux baresip-1.0-like one that keeps its old receive key.  The edge sees
    it all through the same verification path: followed, followed, not-followed."""

    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        endpoints, ports = [], []
        try:
            g1, g2 = new_key(), new_key()
            await edge.put_epoch("conf-v", 1, g1)
            keys = [new_key() for _ in range(3)]
            answer_l = await edge.leg("conf-v", participant=key_json(keys[0]))
            linphone = await participant(answer_l, keys[0], g1, rtcp_interval=0.4)
            endpoints.append(linphone)
            await asterisk.attach(edge, answer_l)
            answer_f, follower, rtcp_f = await join_non_mux(
                edge, asterisk, "conf-v", tx=keys[1], rx=g1, participant=key_json(keys[1])
            )
            answer_b, baresip, rtcp_b = await join_non_mux(
                edge, asterisk, "conf-v", tx=keys[2], rx=g1, participant=key_json(keys[2]),
                adjacent=False,
            )  # fmt: skip
            endpoints += [follower, baresip]
            ports += [rtcp_f, rtcp_b]
            legs = [answer_l["leg"], answer_f["leg"], answer_b["leg"]]
            for leg in legs:
                asterisk.generate(leg, 6.0)
            rtcp_f.report_every(follower, 0.4)
            rtcp_b.report_every(baresip, 0.4)
            assert await settle(
                lambda: min(linphone.rtcp_sent, rtcp_f.sent, rtcp_b.sent) >= 3, timeout=4
            )
            await edge.put_epoch("conf-v", 2, g2)
            started = asyncio.get_running_loop().time()
            linphone.rekey(rx=(g2.suite, g2.key, g2.salt), tx=(keys[0].suite, keys[0].key,
                           keys[0].salt), grace=0)  # fmt: skip
            follower.rekey(rx=(g2.suite, g2.key, g2.salt), grace=0)
            rtcp_f.switch_rx(g2)
            rtcp_f.restart_index()  # SRTCP index from 0 again, same key, on the RTCP port
            relay = edge.edge.service.relay
            for leg in legs:
                relay.switch(leg, 2)  # baresip answered 200 OK ... and did not switch

            async def states() -> dict[str, str]:
                conference = await edge.conference("conf-v")
                return {leg["leg"]: leg["switch"]["state"] for leg in conference["legs"]}

            while "pending" in (current := await states()).values():
                assert asyncio.get_running_loop().time() - started < 5.0, current
                await asyncio.sleep(0.05)
            elapsed = asyncio.get_running_loop().time() - started
            assert current == dict(zip(legs, ["followed", "followed", "not-followed"], strict=True))
            assert elapsed < 3.0
            described = {x["leg"]: x for x in (await edge.conference("conf-v"))["legs"]}
            assert described[legs[2]]["switch"]["reason"] == "stalled"
            for leg in legs[:2]:
                assert described[leg]["counters"]["srtcp_restarts"] == 1
                assert described[leg]["counters"]["replays"] == 0
            for leg in legs[1:]:
                assert described[leg]["counters"]["rtcp_in"] >= 3
                assert described[leg]["counters"]["wrong_port"] == 0
            assert baresip.totals.auth_failures > 0  # it really could not decrypt
            assert follower.totals.auth_failures == 0
        finally:
            for port in ports:
                port.close()
            for endpoint in endpoints:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario())


def test_garbage_on_rtcp_ports_is_dropped_and_counted() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        asterisk = FakeAsterisk(forward=False)
        phone, stranger, outsider = RawParticipant(), RawParticipant(), RawParticipant()
        try:
            group, own = new_key(), new_key()
            await edge.put_epoch("conf-g", 1, group)
            answer = await edge.leg(
                "conf-g",
                participant=key_json(own),
                rtcp_mux=False,
                participant_remote={"host": HOST, "port": 40000, "rtcp_port": phone.address[1]},
            )
            channel = await asterisk.attach(edge, answer)
            part = answer["participant"]
            to_rtcp = (part["host"], part["rtcp_port"])
            to_rtp = (part["host"], part["port"])
            tx = session(own, inbound=False)
            wrong = session(new_key(), inbound=False)
            report = rtp.build_compound([rtp.ReceiverReport(0x1234)])
            phone.send(b"\x00garbage", to_rtcp)  # not RTP/RTCP: malformed
            phone.send(report + bytes(20), to_rtcp)  # plain RTCP, E=0 trailer: refused, malformed
            forged = report + b"\x80\x00\x00\x01" + bytes(10)  # E=1, index 1, zero tag
            phone.send(forged, to_rtcp)  # forged SRTCP: fails authentication
            phone.send(wrong.protect_rtcp(report), to_rtcp)  # wrong key
            phone.send(b"\x81\xc9" + b"\x00" * 1998, to_rtcp)  # oversized
            phone.send(tx.protect(rtp_packet(0x1234, 1, b"\x01" * 160)), to_rtcp)  # RTP here
            phone.send(tx.protect_rtcp(report), to_rtp)  # RTCP to the RTP port: not this leg's way
            await asyncio.sleep(0.1)
            assert channel.rtcp == []
            assert channel.received_rtcp == 0
            good = tx.protect_rtcp(report)
            phone.send(good, to_rtcp)  # good: latches the phone's RTCP source
            assert await settle(lambda: len(channel.rtcp) == 1)
            phone.send(good, to_rtcp)  # replay
            stranger.send(tx.protect_rtcp(report), to_rtcp)  # authenticated, not the latched source
            # internal RTCP port: only from Asterisk's RTCP address
            to_internal = (answer["internal"]["host"], answer["internal"]["rtcp_port"])
            outsider.send(sender_report(1), to_internal)
            assert channel.rtcp_sock is not None
            channel.rtcp_sock.sendto(b"\x80", to_internal)  # malformed
            channel.rtcp_sock.sendto(rtp_packet(1, 1, b"x" * 160), to_internal)  # RTP here
            channel.sock.sendto(sender_report(channel.ssrc), answer_internal_rtp(answer))
            await asyncio.sleep(0.2)
            assert len(channel.rtcp) == 1
            assert channel.received_rtcp == 0
            assert rtp.parse_rtcp(channel.rtcp[0])[0].ssrc == 0x1234
            assert phone.datagrams == []
            assert stranger.datagrams == []
            leg = await edge.call("GET", f"/v1/legs/{answer['leg']}")
            counters = leg["counters"]
            assert counters["malformed"] == 2
            assert counters["auth_failures"] == 2
            assert counters["oversized"] == 1
            assert counters["wrong_port"] == 2 + 2  # participant side 2, internal side 2
            assert counters["replays"] == 1
            assert counters["unlatched"] == 1
            assert counters["internal_unlatched"] == 1
            assert counters["internal_malformed"] == 1
            assert counters["rtcp_in"] == 1
            assert counters["rtp_in"] == 0
            assert leg["rtcp_latched"] == {"host": HOST, "port": phone.address[1]}
            assert leg["latched"] is None  # the RTP source is latched separately
            metrics = (await edge.http.get("/metrics")).text
            assert 'secconf_edge_dropped_total{reason="wrong_port"} 4' in metrics
            # Asterisk's SR reaches the latched RTCP source, under the group key only
            channel.send_rtcp(sender_report(channel.ssrc))
            assert await settle(lambda: len(phone.datagrams) == 1)
            plain = session(group, inbound=True).unprotect_rtcp(phone.datagrams[0])
            assert rtp.parse_rtcp(plain)[0].ssrc == answer["ssrc"]
            assert stranger.datagrams == []
            # RTCP headed by a source that is not Asterisk's: never protected under its SSRC
            channel.send_rtcp(sender_report(0x0BADCAFE))
            await asyncio.sleep(0.1)
            assert len(phone.datagrams) == 1
            leg = await edge.call("GET", f"/v1/legs/{answer['leg']}")
            assert leg["counters"]["internal_malformed"] == 2
        finally:
            for raw in (phone, stranger, outsider):
                raw.close()
            asterisk.close()
            await edge.close()

    run(scenario())


def answer_internal_rtp(answer: dict[str, Any]) -> tuple[str, int]:
    return answer["internal"]["host"], answer["internal"]["port"]


def test_restart_keeps_non_mux_legs(redis_url: str, tmp_path: Path) -> None:
    """Ports, RTCP ports and a=rtcp addresses come back; RTCP re-latches and flows again."""
    kek = tmp_path / "kek"
    generate_key_file(kek)
    config = edge_config(redis=redis_settings(redis_url, kek))

    async def scenario() -> None:
        group, own = new_key(), new_key()
        edge = await EdgeUnderTest.start(config)
        asterisk = FakeAsterisk(forward=False)
        endpoint = rtcp = None
        try:
            await edge.put_epoch("conf-r", 1, group)
            answer, endpoint, rtcp = await join_non_mux(
                edge, asterisk, "conf-r", tx=own, rx=group, participant=key_json(own),
                adjacent=False,
            )  # fmt: skip
            channel = asterisk.channels[answer["leg"]]
            channel.send(b"\x01" * 160)
            assert (await endpoint.receive(2.0)).packet.ssrc == answer["ssrc"]
            await endpoint.send_audio([b"\x02" * 160] * 3, endpoint.ssrc)
            assert await settle(lambda: len(channel.received) == 3)
            rtcp.send_reports(endpoint)
            assert await settle(lambda: len(channel.rtcp) == 1)
            async with client(redis_url) as handle:
                raw = await handle.hget("edgetest:edge:{edge-1}:legs", answer["leg"])
            record = json.loads(raw)
            assert record["rtcp_ports"] == [
                answer["participant"]["rtcp_port"],
                answer["internal"]["rtcp_port"],
            ]
            assert record["participant_rtcp_remote"] == [HOST, rtcp.address[1]]
            await edge.close()
            edge = await EdgeUnderTest.start(config)
            state = await edge.conference("conf-r")
            assert len(state["legs"]) == 1
            restored = state["legs"][0]
            assert restored["rtcp_mux"] == {"participant": False, "internal": False}
            assert restored["participant"]["port"] == answer["participant"]["port"]
            assert restored["participant_rtcp"]["port"] == answer["participant"]["rtcp_port"]
            assert restored["internal_rtcp"]["port"] == answer["internal"]["rtcp_port"]
            assert restored["participant_rtcp_remote"] == {"host": HOST, "port": rtcp.address[1]}
            assert restored["rtcp_latched"] is None  # latching restarts empty
            assert restored["ssrc"] != answer["ssrc"]
            # Asterisk's RTCP first: it goes to the stored a=rtcp address
            channel.send_rtcp(sender_report(channel.ssrc))
            assert await settle(lambda: len(rtcp.received) == 1)
            assert rtp.parse_rtcp(rtcp.received[0])[0].ssrc == restored["ssrc"]
            # then the phone's: re-latched, relayed to Asterisk's RTCP port
            rtcp.send_reports(endpoint)
            assert await settle(lambda: len(channel.rtcp) == 2)
            before = len(channel.received)
            await endpoint.send_audio([b"\x03" * 160] * 3, endpoint.ssrc)
            assert await settle(lambda: len(channel.received) == before + 3)
            channel.send(b"\x04" * 160)
            got = await endpoint.receive(2.0)
            assert (got.packet.ssrc, got.packet.payload) == (restored["ssrc"], b"\x04" * 160)
            leg = await edge.call("GET", f"/v1/legs/{answer['leg']}")
            assert leg["rtcp_latched"] == {"host": HOST, "port": rtcp.address[1]}
            assert leg["counters"]["auth_failures"] == 0
            assert leg["counters"]["replays"] == 0
        finally:
            if rtcp is not None:
                rtcp.close()
            if endpoint is not None:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()

    run(scenario(), timeout=60)


def test_rtcp_fields_refused_precisely_and_ports_paired() -> None:
    async def scenario() -> None:
        edge = await EdgeUnderTest.start()
        try:
            await edge.put_epoch("c", 1, new_key())
            base = {"conference": "c", "participant": key_json(new_key())}
            remote = {"host": HOST, "port": 5000}
            for extra in (
                {"rtcp_mux": "no"},
                {"rtcp_mux": 0},
                {"rtcp_mux": {"participant": "no"}},
                {"rtcp_mux": {"bogus": False}},
                {"participant_remote": {**remote, "rtcp_port": 5001}},  # muxed side
                {"rtcp_mux": {"internal": False}, "participant_remote": {**remote, "rtcp_port": 1}},
                {"rtcp_mux": False, "internal_remote": {**remote, "rtcp_port": 0}},
                {"rtcp_mux": False, "participant_remote": {**remote, "rtcp_host": HOST}},
                {"rtcp_mux": False, "participant_remote": {**remote, "rtcp_port": 9,
                                                           "rtcp_host": "nowhere"}},
                {"rtcp_mux": False, "participant_remote": {"host": HOST, "port": 65535}},
            ):  # fmt: skip
                await edge.call("POST", "/v1/legs", {**base, **extra}, 400)
            assert (await edge.conference("c"))["legs"] == []
            muxed = await edge.leg("c", participant=key_json(new_key()))
            assert set(muxed["participant"]) == {
                "host",
                "port",
                "rtp_port",
                "rtcp_port",
                "rtcp_mux",
            }
            assert muxed["external"]["ports"] == [muxed["participant"]["port"]]
            path = f"/v1/legs/{muxed['leg']}/participant-remote"
            await edge.call("PUT", path, {**remote, "rtcp_port": 5001}, 409)
            described = await edge.call("GET", f"/v1/legs/{muxed['leg']}")
            assert described["participant_remote"] is None
            assert described["participant_rtcp"] == described["participant"]
            half = await edge.leg(
                "c", participant=key_json(new_key()), rtcp_mux={"participant": False}
            )
            p, i = half["participant"], half["internal"]
            assert (p["rtcp_mux"], i["rtcp_mux"]) == (False, True)
            assert p["port"] % 2 == 0
            assert p["rtcp_port"] == p["port"] + 1
            assert i["rtcp_port"] == i["port"]
            leg_path = f"/v1/legs/{half['leg']}"
            await edge.call("PUT", f"{leg_path}/internal-remote", {**remote, "rtcp_port": 7}, 409)
            await edge.call("PUT", f"{leg_path}/participant-remote", {"host": HOST, "port": 65535},
                            400)  # fmt: skip
            got = await edge.call("PUT", f"{leg_path}/participant-remote", remote)
            assert got["participant_rtcp_remote"] == {"host": HOST, "port": 5001}
            got = await edge.call(
                "PUT",
                f"{leg_path}/participant-remote",
                {**remote, "rtcp_port": 6001, "rtcp_host": "127.0.0.2"},
            )
            assert got["participant_rtcp_remote"] == {"host": "127.0.0.2", "port": 6001}
            assert got["internal_rtcp_remote"] is None
            # a deleted non-mux leg frees its RTCP port too
            await edge.call("DELETE", leg_path)
            udp_socket(p["rtcp_port"]).close()
            udp_socket(p["port"]).close()
        finally:
            await edge.close()

    run(scenario())


def _quiet_range(size: int) -> tuple[int, socket.socket]:
    """An even base port with *size* free ports above it, and a socket squatting on base + 3."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        low = secrets.randbelow((min(ephemeral_low, 32768) - 12000) // 2) * 2 + 10000
        probes = []
        try:
            probes = [udp_socket(low + offset) for offset in range(size)]
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
        try:
            return low, udp_socket(low + 3)
        except OSError:
            continue
    raise RuntimeError("no quiet port range found")


def test_port_pairs_from_a_configured_range() -> None:
    """Even RTP port, RTCP on the next one, inside [port_min, port_max]; ports in use skipped."""
    squatters = []
    allocator = PortAllocator(0, 0)
    for _ in range(20):
        rtp_sock, rtcp_sock = allocator.bind_pair(HOST)
        rtp_port, rtcp_port = rtp_sock.getsockname()[1], rtcp_sock.getsockname()[1]
        assert rtp_port % 2 == 0
        assert rtcp_port == rtp_port + 1
        squatters += [rtp_sock, rtcp_sock]
    for sock in squatters:
        sock.close()
    # A range of five pairs with the second pair's odd port taken.  The range is
    # chosen below the kernel's ephemeral ports (so nothing else on the machine
    # grabs them between the probe and the allocation) and probed first.
    low, taken = _quiet_range(10)
    allocator = PortAllocator(low, low + 9)
    pairs = []
    try:
        for _ in range(4):
            pairs.append(allocator.bind_pair(HOST))
        got = [(a.getsockname()[1], b.getsockname()[1]) for a, b in pairs]
        assert got == [(low, low + 1), (low + 4, low + 5), (low + 6, low + 7), (low + 8, low + 9)]
        with pytest.raises(Exception, match="no free even/odd"):
            allocator.bind_pair(HOST)
        # a restart takes exactly the stored ports again
        for a, b in pairs[1:]:
            a.close()
            b.close()
        again = allocator.bind_pair(HOST, low + 6, low + 7)
        assert [s.getsockname()[1] for s in again] == [low + 6, low + 7]
        for sock in again:
            sock.close()
    finally:
        taken.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_deleted_conference_stays_deleted_across_redis_outage_and_restart(
    redis_url: str, tmp_path: Path
) -> None:
    """DELETE /v1/conferences/{c} while Redis is down: 503, media stops at once, the
    deletion is written when Redis is back, and a restart does not revive it.  A
    conference re-created under the same id meanwhile keeps its new records."""
    kek = tmp_path / "kek"
    generate_key_file(kek)

    async def scenario() -> None:
        link = RedisLink(redis_url)
        await link.up()
        config = edge_config(redis=redis_settings(link.url, kek))
        edge = await EdgeUnderTest.start(config)
        asterisk = FakeAsterisk(forward=False)
        closing: list[Any] = []
        try:
            group = new_key()
            await edge.put_epoch("conf-x", 1, group)
            own_a, own_b = new_key(), new_key()
            answer_a, ep_a = await join(
                edge, asterisk, "conf-x", tx=own_a, rx=group, participant=key_json(own_a)
            )
            answer_b, ep_b, rtcp_b = await join_non_mux(
                edge, asterisk, "conf-x", tx=own_b, rx=group, participant=key_json(own_b)
            )
            closing += [ep_a, ep_b]
            rtcp_b.close()
            await link.down()
            # a leg deleted first (pending), then the whole conference
            assert (await edge.http.delete(f"/v1/legs/{answer_a['leg']}")).status_code == 503
            refused = await edge.http.delete("/v1/conferences/conf-x")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"] == "Service Unavailable"
            await edge.call("GET", "/v1/conferences/conf-x", status=404)
            channel_b = asterisk.channels[answer_b["leg"]]
            await ep_b.send_audio([b"\x01" * 160] * 3, ep_b.ssrc)
            await asyncio.sleep(0.1)
            assert channel_b.received == []  # stopped at once
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((HOST, answer_b["participant"]["rtcp_port"]))  # port freed
            # still down: re-creating it is refused and changes nothing
            await edge.call(
                "PUT", "/v1/conferences/conf-x/epochs/1", key_json(new_key()), status=503
            )
            await edge.call("GET", "/v1/conferences/conf-x", status=404)
            await link.up()

            async def stored() -> list[bytes]:
                async with client(redis_url) as handle:
                    return [key async for key in handle.scan_iter("edgetest:*")]

            # The edge retries the pending deletes once Redis answers again; under a loaded
            # machine (CI with other services busy) a retry round can take seconds.
            deadline = asyncio.get_running_loop().time() + 10.0
            while await stored():
                assert asyncio.get_running_loop().time() < deadline, await stored()
                await asyncio.sleep(0.05)
            await edge.close()
            edge = await EdgeUnderTest.start(config)
            await edge.call("GET", "/v1/conferences/conf-x", status=404)
            assert edge.edge.service.relay.legs == {}
            # again, and this time the id is taken anew right after Redis returns
            await edge.put_epoch("conf-x", 1, group)
            _answer_c, ep_c, rtcp_c = await join_non_mux(
                edge, asterisk, "conf-x", tx=own_a, rx=group, participant=key_json(own_a)
            )
            closing.append(ep_c)
            rtcp_c.close()
            await link.down()
            assert (await edge.http.delete("/v1/conferences/conf-x")).status_code == 503
            await link.up()
            fresh = new_key()
            await edge.put_epoch("conf-x", 1, fresh)
            await asyncio.sleep(0.3)  # the tick loop's retries, if any, are done
            await edge.close()
            edge = await EdgeUnderTest.start(config)
            state = await edge.conference("conf-x")
            assert [e["fingerprint"] for e in state["epochs"]] == [fresh.fingerprint]
            assert state["legs"] == []
        finally:
            for endpoint in closing:
                await endpoint.close(bye=False)
            asterisk.close()
            await edge.close()
            await link.down()

    run(scenario(), timeout=60)
