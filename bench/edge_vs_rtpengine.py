"""Relay throughput on one core: secconf's SRTP media edge against rtpengine (issue 4).

Run as root (rtpengine and SO_RCVBUFFORCE) from the repository:

    .venv/bin/python bench/edge_vs_rtpengine.py [--duration 10] [--legs 50,200,500,1000]

It needs ``rtpengine`` (Debian ``rtpengine-daemon``), ``gcc`` and the headers
of libsrtp2 and OpenSSL (``libsrtp2-dev libssl-dev``); it installs nothing and
says which apt command is missing.  Then:

1. builds ``bench/loadgen.c`` into a temporary directory and runs its SRTP
   self-test (its own AES-CM/HMAC-SHA1 code against libsrtp2, both directions);
2. measures the generator's own ceiling: paced SRTP streams straight into its
   own plain-RTP sink, no relay, growing until loss or lateness;
3. starts its own rtpengine (userspace only, ``--table=-1``, one worker thread,
   loopback, its own port range and ng port, foreground) pinned to CPU 0 and,
   for each leg count, sets the legs up over the ng protocol (SDES-SRTP from the
   generator, plain RTP/AVP to the sink), runs the generator pinned to CPU 1 for
   ``--duration`` seconds at 50 packets/s per leg and records sent, received,
   latency and the relay's CPU (/proc/PID/stat); past the given leg counts it
   keeps going up by ``--step`` until loss appears, then bisects;
4. the same against ``secconf edge serve`` through :class:`SecconfEdge` (the one
   place to adapt to the edge's control API), if the edge exists;
5. the edge's rekey switch time: one conference of ``--rekey-legs`` legs, add
   epoch n+1, switch every leg, time until the sink has seen every leg's stream
   authenticate under the new key.

Every process it starts is killed on exit, on an error and on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from secconf.lab.services.process import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUITE = "AES_CM_128_HMAC_SHA1_80"
APT = "apt-get install -y --no-install-recommends rtpengine-daemon gcc libc6-dev libsrtp2-dev libssl-dev"
RELAY_CPU = "0"
GEN_CPU = "1"
HOST = "127.0.0.1"
# "No growing backlog": at most this much traffic (ms) still queued in the relay when sending
# stops.  Below saturation it is ~1 ms; at 100% CPU a relay first queues tens of ms, then loses.
MAX_BACKLOG_MS = 10.0
console = Console(width=None if sys.stdout.isatty() else 120)


# -- process bookkeeping ---------------------------------------------------------------------

_started: list[subprocess.Popen[Any]] = []


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    process = subprocess.Popen(args, start_new_session=True, **kwargs)
    _started.append(process)
    return process


def stop(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=timeout)
    with contextlib.suppress(ValueError):
        _started.remove(process)


def stop_all() -> None:
    for process in list(reversed(_started)):
        with contextlib.suppress(Exception):
            stop(process)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- small helpers ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of *pid*, seconds (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} logical CPUs, Linux {os.uname().release}"


def new_key() -> tuple[bytes, bytes]:
    return secrets.token_bytes(16), secrets.token_bytes(14)


def key_hex(key: bytes, salt: bytes) -> str:
    return (key + salt).hex()


def check_prerequisites() -> None:
    missing = []
    if shutil.which("rtpengine") is None:
        missing.append("rtpengine (Debian rtpengine-daemon)")
    if shutil.which("gcc") is None:
        missing.append("gcc")
    if not Path("/usr/include/srtp2/srtp.h").exists():
        missing.append("libsrtp2 headers (libsrtp2-dev)")
    if not Path("/usr/include/openssl/evp.h").exists():
        missing.append("OpenSSL headers (libssl-dev)")
    if shutil.which("taskset") is None:
        missing.append("taskset (util-linux)")
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}\ninstall with: {APT}")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two CPUs: the relay on CPU 0, the generator on CPU 1")
    if os.geteuid() != 0:
        console.print("[yellow]not root: sink buffers fall back to rmem_max[/]")


# -- bencode (the ng protocol's encoding) ------------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    def parse(i: int) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"l", b"d"):
            i += 1
            items = []
            while data[i : i + 1] != b"e":
                item, i = parse(i)
                items.append(item)
            if c == b"l":
                return items, i + 1
            return {k.decode(): v for k, v in zip(items[::2], items[1::2], strict=True)}, i + 1
        if c.isdigit():
            colon = data.index(b":", i)
            start = colon + 1
            end = start + int(data[i:colon])
            if end > len(data):
                raise ValueError("truncated string")
            return data[start:end], end
        raise ValueError(f"bad bencode at {i}")

    value, end = parse(0)
    if end != len(data):
        raise ValueError("trailing data")
    return value


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NgClient:
    """rtpengine's ng control protocol: ``cookie SP bencoded-dict`` over UDP."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.address = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)

    def request(self, command: dict[str, Any], attempts: int = 3) -> dict[str, Any]:
        cookie = secrets.token_hex(8).encode()
        payload = cookie + b" " + bencode(command)
        for _ in range(attempts):
            self.sock.sendto(payload, self.address)
            try:
                while True:
                    data = self.sock.recv(65536)
                    if data.startswith(cookie + b" "):
                        reply = bdecode(data[len(cookie) + 1 :])
                        if text(reply.get("result")) == "error":
                            raise RuntimeError(f"ng {command['command']}: {reply}")
                        return reply
            except TimeoutError:
                continue
        raise TimeoutError(f"ng {command['command']}: no answer from rtpengine")

    def close(self) -> None:
        self.sock.close()


# -- relays ----------------------------------------------------------------------------------


@dataclass
class Leg:
    send_port: int  # where the generator sends this leg's SRTP
    ssrc: int  # the generator's SSRC on it
    key: str  # hex key || salt the generator protects with
    sink_ssrc: int  # the SSRC this leg's plain RTP carries at the sink
    handle: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class Relay:
    name = "relay"
    process: subprocess.Popen[Any] | None = None
    external_pid: int | None = None  # a relay this script did not start

    @property
    def pid(self) -> int:
        if self.external_pid is not None:
            return self.external_pid
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        if self.external_pid is not None:
            return Path(f"/proc/{self.external_pid}").exists()
        return self.process is not None and self.process.poll() is None

    def setup(self, count: int, gen_port: int, sink_port: int) -> list[Leg]:
        raise NotImplementedError

    def teardown(self, legs: list[Leg]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.process is not None:
            stop(self.process)


class Rtpengine(Relay):
    name = "rtpengine"

    def __init__(self, workdir: Path, port_min: int, port_max: int) -> None:
        self.ng_port = free_port(socket.SOCK_DGRAM)
        self.log = (workdir / "rtpengine.log").open("w")
        args = [
            "taskset", "-c", RELAY_CPU, "rtpengine",
            "--config-file=none", "--foreground", "--log-stderr", "--log-level=4",
            "--table=-1", f"--interface={HOST}", f"--listen-ng={HOST}:{self.ng_port}",
            f"--port-min={port_min}", f"--port-max={port_max}",
            "--num-threads=1", "--media-num-threads=1", "--timeout=120", "--delete-delay=0",
        ]  # fmt: skip
        self.command = " ".join(args)
        self.process = spawn(args, stdout=self.log, stderr=subprocess.STDOUT)
        self.ng = NgClient(self.ng_port)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"rtpengine exited ({self.process.returncode}), see {self.log.name}"
                )
            try:
                if text(self.ng.request({"command": "ping"}, attempts=1).get("result")) == "pong":
                    break
            except (TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"rtpengine did not answer ng ping, see {self.log.name}")
            time.sleep(0.2)
        version = subprocess.run(
            ["rtpengine", "--version"], capture_output=True, text=True, timeout=10
        )
        self.version = (version.stdout + version.stderr).strip()

    @staticmethod
    def _sdp(port: int, crypto: str | None) -> str:
        lines = [
            "v=0", f"o=- {secrets.randbelow(10**9)} 1 IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}",
            "t=0 0", f"m=audio {port} {'RTP/SAVP' if crypto else 'RTP/AVP'} 0",
            "a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=sendrecv",
        ]  # fmt: skip
        if crypto:
            lines.append(f"a=crypto:1 {SUITE} inline:{crypto}")
        return "\r\n".join(lines) + "\r\n"

    def setup(self, count: int, gen_port: int, sink_port: int) -> list[Leg]:
        legs = []
        for i in range(count):
            call_id, from_tag, to_tag = (secrets.token_hex(8) for _ in range(3))
            key, salt = new_key()
            inline = base64.b64encode(key + salt).decode()
            common = {"call-id": call_id, "from-tag": from_tag, "ICE": "remove"}
            self.ng.request(
                {"command": "offer", **common, "sdp": self._sdp(gen_port, inline),
                 "transport-protocol": "RTP/AVP", "replace": ["origin", "session-connection"]}
            )  # fmt: skip
            reply = self.ng.request(
                {"command": "answer", **common, "to-tag": to_tag, "sdp": self._sdp(sink_port, None)}
            )
            sdp = text(reply["sdp"])
            match = re.search(r"^m=audio (\d+) RTP/SAVP", sdp, re.MULTILINE)
            if not match or f"c=IN IP4 {HOST}" not in sdp:
                raise RuntimeError(f"unexpected answer SDP from rtpengine:\n{sdp}")
            ssrc = 0x10000000 + i
            legs.append(
                Leg(int(match.group(1)), ssrc, key_hex(key, salt), ssrc, (call_id, from_tag))
            )
        return legs

    def teardown(self, legs: list[Leg]) -> None:
        for leg in legs:
            call_id, from_tag = leg.handle
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.ng.request({"command": "delete", "call-id": call_id, "from-tag": from_tag})

    def close(self) -> None:
        self.ng.close()
        super().close()
        self.log.close()


class SecconfEdge(Relay):
    """The adapter to ``secconf edge serve`` (docs/edge.md): adapt this class, nothing else.

    Expected control API (HTTP JSON on loopback, ``Authorization: Bearer TOKEN``):
    ``PUT /v1/conferences/{c}/epochs/{n}`` {suite, key, salt} (base64);
    ``POST /v1/legs`` {conference, mode: "sdes", participant: {suite, key, salt}, internal: "rtp"}
    -> {id, participant: {host, rtp_port}, internal: {host, rtp_port}, outbound_ssrc};
    ``PUT /v1/legs/{id}/internal-remote`` {host, rtp_port}; ``POST /v1/legs/{id}/switch``
    {epoch}; ``DELETE /v1/legs/{id}``.  Assumed media behaviour: SRTP from the participant,
    decrypted, goes out as plain RTP to the internal remote with the participant's SSRC;
    plain RTP in on the internal port goes out to the participant's latched address
    (symmetric RTP: the source of its authenticated SRTP), protected under the leg's
    outbound epoch with SSRC ``outbound_ssrc``.
    """

    name = "secconf edge"
    legs_per_conference = 100

    def __init__(
        self,
        workdir: Path,
        port_min: int,
        port_max: int,
        url: str | None = None,
        token: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.external_pid = pid
        self.conferences: dict[str, int] = {}  # conference -> newest epoch
        self.epoch_keys: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        if url:  # an edge the operator started (pin it to CPU 0 and pass --edge-pid)
            self.url, self.token = url, token or ""
        else:
            self.token = secrets.token_urlsafe(24)
            control = free_port(socket.SOCK_STREAM)
            token_file = workdir / "edge.token"
            token_file.write_text(self.token + "\n")
            token_file.chmod(0o600)
            config = workdir / "edge.toml"
            config.write_text(
                f'[edge]\nlisten = "{HOST}"\nport = {control}\ntoken_file = "{token_file}"\n'
                f'media_host = "{HOST}"\nport_min = {port_min}\nport_max = {port_max}\n'
            )
            self.log = (workdir / "edge.log").open("w")
            secconf = str(Path(sys.executable).parent / "secconf")
            args = ["taskset", "-c", RELAY_CPU, secconf, "edge", "serve", "--config", str(config)]
            self.process = spawn(args, stdout=self.log, stderr=subprocess.STDOUT)
            self.url = f"http://{HOST}:{control}"
        self.http = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=5.0
        )
        deadline = time.monotonic() + 15
        while True:
            if self.process is not None and self.process.poll() is not None:
                self.close()
                raise RuntimeError(
                    f"secconf edge exited ({self.process.returncode}): {self._log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                self.http.get("/healthz")  # any answer means it listens
                break
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"secconf edge did not start listening: {self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self) -> str:
        log = getattr(self, "log", None)
        if log is None:
            return ""
        log.flush()
        return " | ".join(Path(log.name).read_text().strip().splitlines()[-3:])

    @staticmethod
    def _b64key(key: bytes, salt: bytes) -> dict[str, str]:
        return {
            "suite": SUITE,
            "key": base64.b64encode(key).decode(),
            "salt": base64.b64encode(salt).decode(),
        }

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 300:
            raise RuntimeError(
                f"edge {response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else {}

    def add_epoch(self, conference: str, number: int) -> tuple[bytes, bytes]:
        key, salt = new_key()
        self._ok(
            self.http.put(
                f"/v1/conferences/{conference}/epochs/{number}", json=self._b64key(key, salt)
            )
        )
        self.conferences[conference] = number
        self.epoch_keys[conference, number] = (key, salt)
        return key, salt

    def add_leg(self, conference: str, ssrc: int, remote_port: int) -> Leg:
        key, salt = new_key()
        body = {
            "conference": conference,
            "mode": "sdes",
            "participant": self._b64key(key, salt),
            "internal": "rtp",
        }
        reply = self._ok(self.http.post("/v1/legs", json=body))
        leg_id = str(reply.get("id") or reply.get("leg") or reply.get("leg_id"))
        participant = reply["participant"]
        self._ok(
            self.http.put(
                f"/v1/legs/{leg_id}/internal-remote", json={"host": HOST, "rtp_port": remote_port}
            )
        )
        return Leg(
            int(participant["rtp_port"]), ssrc, key_hex(key, salt), ssrc, leg_id,
            {"conference": conference, "internal_port": int(reply["internal"]["rtp_port"]),
             "outbound_ssrc": int(reply["outbound_ssrc"])},
        )  # fmt: skip

    def switch(self, leg: Leg, epoch: int) -> None:
        self._ok(self.http.post(f"/v1/legs/{leg.handle}/switch", json={"epoch": epoch}))

    def setup(self, count: int, gen_port: int, sink_port: int) -> list[Leg]:
        legs: list[Leg] = []
        tag = secrets.token_hex(3)
        for i in range(count):
            conference = f"bench-{tag}-{i // self.legs_per_conference}"
            if conference not in self.conferences:
                self.add_epoch(conference, 1)
            legs.append(self.add_leg(conference, 0x20000000 + i, sink_port))
        return legs

    def teardown(self, legs: list[Leg]) -> None:
        for leg in legs:
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete(f"/v1/legs/{leg.handle}")

    def close(self) -> None:
        self.http.close()
        super().close()


# -- the generator ---------------------------------------------------------------------------


class Loadgen:
    def __init__(self, workdir: Path, payload: int, max_backlog_ms: float = MAX_BACKLOG_MS) -> None:
        self.max_backlog_ms = max_backlog_ms
        self.workdir = workdir
        self.payload = payload
        self.binary = workdir / "loadgen"
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(self.binary), str(HERE / "loadgen.c"), "-lsrtp2", "-lcrypto"],
            check=True, timeout=120,
        )  # fmt: skip
        result = subprocess.run(
            [str(self.binary), "--selftest"], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise SystemExit(f"loadgen SRTP self-test against libsrtp2 failed: {result.stdout}")

    def run(
        self,
        sockets: list[int],
        tx: list[str],
        rx: list[str],
        duration: float,
        watch_pid: int | None = None,
        during: Any = None,
    ) -> dict[str, Any]:
        """Run one load; *during(t0)* runs in this thread while the generator runs."""
        config = self.workdir / "loadgen.conf"
        lines = [f"duration {duration}", "drain_ms 500", "tick_us 1000", f"payload {self.payload}"]
        lines += [f"socket {port}" for port in sockets] + tx + rx
        config.write_text("\n".join(lines) + "\n")
        t0 = time.monotonic()
        process = spawn(
            ["taskset", "-c", GEN_CPU, str(self.binary), str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        cpu: dict[str, float] = {}
        if watch_pid is not None:  # relay CPU over the middle of the run (skip start and end)
            start, end = t0 + min(1.0, duration / 4), t0 + duration - min(0.5, duration / 8)
            time.sleep(max(0.0, start - time.monotonic()))
            cpu["c0"], cpu["t0"] = cpu_seconds(watch_pid), time.monotonic()
            if during is not None:
                during(t0)
            time.sleep(max(0.0, end - time.monotonic()))
            cpu["c1"], cpu["t1"] = cpu_seconds(watch_pid), time.monotonic()
        elif during is not None:
            during(t0)
        try:
            out, err = process.communicate(timeout=duration + 60)
        finally:
            stop(process)
        if process.returncode != 0:
            raise RuntimeError(f"loadgen failed ({process.returncode}): {err.strip()}")
        report = json.loads(out)
        if cpu:
            report["relay_cpu_pct"] = 100 * (cpu["c1"] - cpu["c0"]) / (cpu["t1"] - cpu["t0"])
        report["gen_cpu_pct"] = 100 * report["cpu_seconds"] / max(report["send_seconds"], 1e-9)
        report["offered_pps"] = report["sent"] / report["send_seconds"]
        report["delivered_pps"] = report["received"] / report["send_seconds"]
        report["loss_pct"] = (
            100 * (1 - report["received"] / report["sent"]) if report["sent"] else 0.0
        )
        # Kept up: the lag behind the schedule stayed bounded (this VM's timer jitter alone
        # gives a few ms; a saturated generator falls further behind every tick).
        report["gen_on_time"] = report["max_lag_us"] < 100_000
        # Backlog when sending stopped, in ms of traffic: a relay that keeps up holds only
        # what is in flight (~ms); one that does not hides the excess in its socket buffers
        # (one per leg: hundreds of thousands of packets) and drains it after the run.
        behind = report["sent"] - report["received_at_stop"]
        report["backlog_ms"] = 1000 * behind / report["offered_pps"] if report["sent"] else 0.0
        report["zero_loss"] = (
            report["backlog_ms"] < self.max_backlog_ms
            and report["received"] == report["sent"]
            and report["silent_rx_streams"] == 0
            and report["gen_on_time"]
        )
        return report

    def load(
        self, legs: list[Leg], gen_port: int, sink_port: int, duration: float, pid: int | None
    ) -> dict[str, Any]:
        tx = [f"tx 0 {leg.send_port} {leg.ssrc} 0 {SUITE} {leg.key}" for leg in legs]
        rx = [f"rx 1 {leg.sink_ssrc} none -" for leg in legs]
        return self.run([gen_port, sink_port], tx, rx, duration, pid)


def generator_ceiling(
    gen: Loadgen, steps: list[int], duration: float
) -> tuple[list[dict[str, Any]], float]:
    """Paced SRTP streams into the generator's own sink, no relay, until loss.

    Conservative: here the generator's core also pays the loopback delivery and
    the sink authenticates and decrypts every packet, which it does not do for a
    relay's plain RTP.
    """
    rows, best = [], 0.0
    for streams in steps:
        gen_port, sink_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        key = key_hex(*new_key())
        tx = [f"tx 0 {sink_port} {0x30000000 + i} 0 {SUITE} {key}" for i in range(streams)]
        rx = [f"rx 1 {0x30000000 + i} {SUITE} {key}" for i in range(streams)]
        report = gen.run([gen_port, sink_port], tx, rx, duration)
        report["legs"] = streams
        rows.append(report)
        if not report["zero_loss"]:
            break
        best = max(best, report["delivered_pps"])
    return rows, best


# -- the sweep -------------------------------------------------------------------------------


def sweep(
    relay: Relay,
    gen: Loadgen,
    base: list[int],
    step: int,
    max_legs: int,
    refine: int,
    duration: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def one(count: int) -> dict[str, Any]:
        gen_port, sink_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        t = time.monotonic()
        legs = relay.setup(count, gen_port, sink_port)
        setup_s = time.monotonic() - t
        try:
            report = relay_load(relay, gen, legs, gen_port, sink_port, duration)
        finally:
            relay.teardown(legs)
        report["legs"] = count
        report["setup_s"] = setup_s
        rows.append(report)
        console.print(
            f"  {relay.name}: {count} legs: offered {report['offered_pps']:.0f} pps, delivered "
            f"{report['delivered_pps']:.0f}, loss {report['loss_pct']:.3f}%, backlog "
            f"{report['backlog_ms']:.0f} ms, relay CPU "
            f"{report['relay_cpu_pct']:.0f}%, p99 latency {report['latency_us']['p99']} us"
            + ("" if report["gen_on_time"] else " [generator late]")
            + (f" [{report['undecrypted']} not decrypted]" if report["undecrypted"] else "")
        )
        time.sleep(1.0)
        return report

    good, bad = 0, None
    for count in base:
        if one(count)["zero_loss"]:
            good = max(good, count)
        else:
            bad = count
            break
    count = max(base) + step
    while bad is None and count <= max_legs:
        if one(count)["zero_loss"]:
            good = count
            count += step
        else:
            bad = count
    for _ in range(refine):
        if bad is None or bad - good <= max(10, step // 8):
            break
        middle = (good + bad) // 2
        if one(middle)["zero_loss"]:
            good = middle
        else:
            bad = middle
    rows.sort(key=lambda r: r["legs"])
    return rows


def relay_load(
    relay: Relay, gen: Loadgen, legs: list[Leg], gen_port: int, sink_port: int, duration: float
) -> dict[str, Any]:
    if not relay.alive():
        raise RuntimeError(f"{relay.name} is not running")
    return gen.load(legs, gen_port, sink_port, duration, relay.pid)


def rekey_test(edge: SecconfEdge, gen: Loadgen, count: int, duration: float) -> dict[str, Any]:
    """One conference of *count* legs; epoch n+1; switch every leg; time to see it all."""
    conference = f"rekey-{secrets.token_hex(3)}"
    participant_port, internal_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    old_key = edge.add_epoch(conference, 1)
    legs = [edge.add_leg(conference, 0x40000000 + i, internal_port) for i in range(count)]
    new_key_ = new_key()
    tx = [f"tx 0 {leg.send_port} {leg.ssrc} 0 {SUITE} {leg.key}" for leg in legs]  # latch
    tx += [
        f"tx 1 {leg.extra['internal_port']} {0x50000000 + i} 0 none -" for i, leg in enumerate(legs)
    ]
    rx = [
        f"rx 0 {leg.extra['outbound_ssrc']} {SUITE} {key_hex(*old_key)} {key_hex(*new_key_)}"
        for leg in legs
    ]
    rx += [f"rx 1 {leg.ssrc} none -" for leg in legs]
    marks: dict[str, float] = {}

    def during(t0: float) -> None:
        time.sleep(max(0.0, t0 + duration / 3 - time.monotonic()))
        key, salt = new_key_
        edge._ok(
            edge.http.put(f"/v1/conferences/{conference}/epochs/2", json=edge._b64key(key, salt))
        )
        marks["epoch"] = time.monotonic_ns()
        for leg in legs:
            edge.switch(leg, 2)
        marks["switched"] = time.monotonic_ns()

    try:
        report = gen.run([participant_port, internal_port], tx, rx, duration, edge.pid, during)
    finally:
        edge.teardown(legs)
    outbound = report["rx"][:count]
    firsts = [r[2] for r in outbound if r[1] > 0]
    result = {
        "legs": count,
        "switch_api_ms": (marks["switched"] - marks["epoch"]) / 1e6,
        "legs_on_new_key": len(firsts),
        "outbound_received": sum(r[0] for r in outbound),
        "outbound_auth_fail": sum(r[3] for r in outbound),
        "internal_sent": report["sent"] // 2,
        "latency_us": report["latency_us"],
    }
    if firsts:
        result["all_switched_ms"] = (max(firsts) - marks["epoch"]) / 1e6
        result["first_switched_ms"] = (min(firsts) - marks["epoch"]) / 1e6
    return result


# -- reporting -------------------------------------------------------------------------------


def ceiling_of(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [r for r in rows if r["zero_loss"]]
    return max(good, key=lambda r: r["delivered_pps"]) if good else None


def print_table(title: str, rows: list[dict[str, Any]], other: list[dict[str, Any]] | None) -> None:
    table = Table(title=title)
    for column in (
        "legs",
        "offered pps",
        "delivered pps",
        "loss %",
        "relay CPU %",
        "p50/p99 µs",
        "gen CPU %",
    ):
        table.add_column(column, justify="right")
    if other is not None:
        table.add_column("CPU ratio rtpengine/secconf", justify="right")
    by_legs = {r["legs"]: r for r in other or []}
    for r in rows:
        cells = [
            str(r["legs"]), f"{r['offered_pps']:,.0f}", f"{r['delivered_pps']:,.0f}",
            f"{r['loss_pct']:.3f}", f"{r['backlog_ms']:.0f}", f"{r.get('relay_cpu_pct', float('nan')):.0f}",
            f"{r['latency_us']['p50']}/{r['latency_us']['p99']}", f"{r['gen_cpu_pct']:.0f}",
        ]  # fmt: skip
        if other is not None:
            o = by_legs.get(r["legs"])
            cells.append(
                f"{o['relay_cpu_pct'] / r['relay_cpu_pct']:.2f}"
                if o and r.get("relay_cpu_pct") and r["zero_loss"] and o["zero_loss"]
                else "-"
            )
        table.add_row(*cells, style=None if r["zero_loss"] else "red")
    console.print(table)


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="secconf-media-bench-") as name:
        yield Path(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load step")
    parser.add_argument("--legs", default="50,200,500,1000", help="leg counts always measured")
    parser.add_argument("--step", type=int, default=250, help="then grow by this until loss")
    parser.add_argument("--max-legs", type=int, default=4000)
    parser.add_argument(
        "--refine", type=int, default=2, help="bisection steps after the first loss"
    )
    parser.add_argument(
        "--payload", type=int, default=160, help="RTP payload bytes (160 = 20 ms G.711)"
    )
    parser.add_argument(
        "--gen-steps", default="2000,3000,4000,5000,6000", help="generator ceiling streams"
    )
    parser.add_argument("--gen-duration", type=float, default=5.0)
    parser.add_argument(
        "--rtp-ports",
        default="10000-29999",
        help="rtpengine media ports (outside the ephemeral range)",
    )
    parser.add_argument(
        "--edge-ports",
        default="10000-29999",
        help="the edge media ports (rtpengine is gone by then)",
    )
    parser.add_argument("--edge-url", help="use an edge already running (pin it with taskset -c 0)")
    parser.add_argument("--edge-token", help="bearer token for --edge-url")
    parser.add_argument(
        "--edge-pid", type=int, help="pid of the edge behind --edge-url (for its CPU)"
    )
    parser.add_argument("--rekey-legs", type=int, default=100)
    parser.add_argument(
        "--max-backlog-ms", type=float, default=MAX_BACKLOG_MS, help="sustained: queued below this"
    )
    parser.add_argument("--skip", default="", help="comma list of: ceiling, rtpengine, edge, rekey")
    parser.add_argument("--json", type=Path, help="also write every raw report here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    skip = set(filter(None, args.skip.split(",")))
    base = [int(x) for x in args.legs.split(",")]
    check_prerequisites()
    results: dict[str, Any] = {"machine": machine(), "payload": args.payload}
    console.print(
        f"[bold]machine[/]: {results['machine']}; relay on CPU {RELAY_CPU}, generator on CPU {GEN_CPU}"
    )
    srtp_size = 12 + args.payload + 10
    console.print(
        f"packets: RTP {12 + args.payload} bytes, SRTP {srtp_size} bytes ({SUITE}), 50 per second per leg"
    )
    try:
        with workspace() as workdir:
            gen = Loadgen(workdir, args.payload, args.max_backlog_ms)
            console.print("loadgen built; SRTP self-test against libsrtp2: ok")
            if "ceiling" not in skip:
                rows, best = generator_ceiling(
                    gen, [int(x) for x in args.gen_steps.split(",")], args.gen_duration
                )
                results["generator"] = {"rows": rows, "ceiling_pps": best}
                print_table(
                    "load generator alone (SRTP out, SRTP-authenticating sink, both on CPU 1)",
                    rows,
                    None,
                )
                console.print(
                    f"[bold]generator ceiling[/]: {best:,.0f} pps at 0% loss and on schedule"
                )
            rtp_rows: list[dict[str, Any]] | None = None
            if "rtpengine" not in skip:
                low, high = (int(x) for x in args.rtp_ports.split("-"))
                engine = Rtpengine(workdir, low, high)
                results["rtpengine_version"] = engine.version
                results["rtpengine_command"] = engine.command
                console.print(f"rtpengine: {engine.version}\n  {engine.command}")
                try:
                    rtp_rows = sweep(
                        engine, gen, base, args.step, args.max_legs, args.refine, args.duration
                    )
                finally:
                    engine.close()
                results["rtpengine"] = rtp_rows
                print_table(
                    "rtpengine 10.5 userspace, one thread on CPU 0 (SDES-SRTP -> RTP)",
                    rtp_rows,
                    None,
                )
            edge: SecconfEdge | None = None
            if not ({"edge", "rekey"} <= skip):
                low, high = (int(x) for x in args.edge_ports.split("-"))
                if args.edge_url and not args.edge_pid:
                    raise SystemExit("--edge-url needs --edge-pid (the relay's CPU is measured)")
                try:
                    edge = SecconfEdge(
                        workdir, low, high, args.edge_url, args.edge_token, args.edge_pid
                    )
                except (RuntimeError, OSError) as exc:
                    console.print(f"[yellow]secconf edge not measured: {exc}[/]")
                    results["edge_error"] = str(exc)
            if edge is not None:
                try:
                    if "edge" not in skip:
                        edge_rows = sweep(
                            edge, gen, base, args.step, args.max_legs, args.refine, args.duration
                        )
                        results["edge"] = edge_rows
                        print_table(
                            "secconf edge, one process on CPU 0 (SDES-SRTP -> RTP)",
                            edge_rows,
                            rtp_rows,
                        )
                    if "rekey" not in skip:
                        rekey = rekey_test(edge, gen, args.rekey_legs, max(6.0, args.duration))
                        results["rekey"] = rekey
                        console.print(
                            f"[bold]rekey[/] ({args.rekey_legs} legs, one conference): {rekey}"
                        )
                finally:
                    edge.close()
            summary = Table(title="ceiling at 0% loss and no growing backlog (one core)")
            for column in ("relay", "legs", "delivered pps", "relay CPU %", "vs rtpengine"):
                summary.add_column(column, justify="right")
            rtp_best = ceiling_of(rtp_rows or [])
            for name, rows in (("rtpengine", rtp_rows), ("secconf edge", results.get("edge"))):
                best_row = ceiling_of(rows or [])
                if best_row is None:
                    continue
                top = not any(r["legs"] > best_row["legs"] for r in rows or [])
                ratio = (
                    f"{best_row['delivered_pps'] / rtp_best['delivered_pps']:.2f}"
                    if rtp_best
                    else "-"
                )
                summary.add_row(
                    name, f"{best_row['legs']}" + (" (no loss seen up to here)" if top else ""),
                    f"{best_row['delivered_pps']:,.0f}", f"{best_row['relay_cpu_pct']:.0f}", ratio,
                )  # fmt: skip
            console.print(summary)
            if "generator" in results:
                console.print(f"generator ceiling: {results['generator']['ceiling_pps']:,.0f} pps")
            if "edge" not in results:
                console.print("[yellow]secconf edge: not measured (see above)[/]")
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    finally:
        stop_all()
        if args.json:
            for key in ("generator", "rtpengine", "edge"):
                rows = results.get(key)
                for row in rows["rows"] if isinstance(rows, dict) else rows or []:
                    row.pop("rx", None)
            args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
