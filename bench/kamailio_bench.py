"""Kamailio module benchmark: clean calls/s of native relaying vs secconf SDES joins (sipp).

Run with ``.venv/bin/python bench/kamailio_bench.py [--seconds 15] [--children 4]``.
Everything runs on this host, on loopback: a real redis-server
(:class:`secconf.lab.services.RedisProcess`), the real media edge (``secconf edge
serve``), Kamailio 5.6 and sipp (Debian ``sip-tester``) as the load generator
(UAC) and as the mixer (UAS, sipp's built-in ``uas`` scenario, which answers
plain RTP/AVP SDP, bench/sipp/mixer_uas.xml: sipp's ``uas`` plus the
Record-Route echo it lacks).

Measured, each as the highest ``-r`` rate whose run of ``--seconds`` is
**clean**: every call successful, zero retransmissions, and the run not
longer than ``--seconds`` + 10 % (sipp kept the rate):

(a) **native**: Kamailio with a minimal native relay cfg written here (the
    shipped cfg's modules but app_python3; record_route + t_relay to the UAS);
(b) **secconf SDES join**: the shipped cfg and the module, joins to a
    conference created beforehand (bench/sipp/sdes_join.xml: a=crypto offer,
    P-Asserted-Identity from 127.0.0.1, a trusted source; ACK; BYE), i.e.
    per call: SDP checks, one Lua ``join``, edge ``POST /v1/legs``, the SDP
    rewrite, Lua ``answered``, edge ``internal-remote`` + ``switch``, the
    answer keyed, and at BYE Lua ``release`` + edge ``DELETE``;
(b0) the same joins with **no media edge configured** (``NoEdge``: the module's
    own cost, policy + Lua + both SDP rewrites, comparable with the "Python
    rewrite + naive Redis SET+GET" figure the issue quotes);
(c) **KMS-mode join**: a conference created by Alice with a ticket naming Bob;
    every INVITE carries a fresh TRANSFER_INIT built with Bob's ticket
    (bench/sipp/kms_join.xml, an injection file written right before each
    run), so per call also the replay check, one RESOLVE round trip to the
    real KMS (``secconf kms serve``), the MAC/Vi checks, the TRANSFER_RESP
    with the group key, and the replay token write.

Search: rates grow x1.5 in short probe runs (``--probe-seconds``) until one
is not clean, two bisecting probes between the last clean and the first
dirty rate, then full runs step down by 10 % from the last clean probe
until one is clean.  Then the module's per-INVITE time split: a separate run
at half the clean rate with ``[focus] timing = true`` (the ``P:timing``
counters, docs/kamailio.md).

All of them in the same run, on the same machine, against the same sipp mixer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from secconf.client.agent import ParticipantAgent
from secconf.client.kms import KmsClient
from secconf.client.sip import UserAgent
from secconf.core.keymgmt import key_mgmt_value
from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.lab.services import EdgeProcess, KamailioProcess, KmsProcess, RedisProcess
from secconf.store import generate_key_file
from secconf.store.keywrap import load_key_file

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
CFG = ROOT / "config" / "kamailio" / "kamailio.cfg"
SCENARIO = ROOT / "bench" / "sipp" / "sdes_join.xml"
KMS_SCENARIO = ROOT / "bench" / "sipp" / "kms_join.xml"
MIXER = ROOT / "bench" / "sipp" / "mixer_uas.xml"
PREFIX = "sckb"
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
FOCUS = "sip:focus@conf.bench.invalid"
KMS_ID = "sip:kms.bench.invalid"

NATIVE_CFG = """
debug=1
log_stderror=no
children={children}
disable_tcp=yes
auto_aliases=no
server_header="Server: native-bench"
user_agent_header="User-Agent: native-bench"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "sanity.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "textopsx.so"
loadmodule "xlog.so"
loadmodule "kex.so"
loadmodule "corex.so"
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 1)

request_route {{
    if (!mf_process_maxfwd_header("16")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (!sanity_check()) {{ exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not Here"); exit;
    }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    t_check_trans();
    record_route();
    $du = "sip:127.0.0.1:{uas_port}";
    t_relay();
}}
"""

SETTINGS = """
[focus]
domain = "conf.bench.invalid"
timing = {timing}

[lab]
# The test UAs send SDES over UDP (tests/security checks the TLS-only default).
sdes_over_udp = true

[identity]
trusted_sources = ["udp:127.0.0.1"]

[limits]
# Functional tests and benchmarks hold many dialogs per identity (tests/security checks the limit).
dialogs_per_identity = 1000
refers_per_minute = 600

[policy]
creators = ["{alice}"]
allowed = ["{bob}"]

[upstream]
uri = "sip:127.0.0.1:{uas_port}"

[redis]
url = "{redis_url}"
timeout = 0.5
prefix = "{prefix}"
kek_file = "{kek}"
kek_id = "bench-kek"

{edge}{kms}"""

EDGE_SETTINGS = """
[edge]
url = "{edge_url}"
token_file = "{token}"
timeout = 0.5
"""

KMS_SETTINGS = """
[kms]
url = "{kms_url}"
kms_identity = "{kms_identity}"
focus_identity = "{focus}"
psk_file = "{psk_file}"
timeout = 0.5
"""

Inject = Callable[[float, float], Path]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def kamailio(workdir: Path, children: int, settings: str | None = None,
             config: Path = CFG) -> KamailioProcess:  # fmt: skip
    """Kamailio on a free UDP port: the shipped cfg with the module (*settings*), or *config*
    (the native relay); debug 1 and 256/32 MiB of shared/private memory for the load."""
    process = KamailioProcess(
        workdir, settings, children=children, config=config, debug=1, memory=(256, 32)
    )
    process.start()
    return process


@dataclass
class RunResult:
    rate: float
    seconds: float
    calls: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float

    def clean(self, seconds: float) -> bool:
        return (
            self.failed == 0
            and self.retransmissions == 0
            and self.successful == self.calls
            and self.elapsed <= seconds * 1.1 + 0.5
        )


def _elapsed(text: str) -> float:
    # sipp's "HH:MM:SS:mmm" (older) or "HH:MM:SS" (+ fraction)
    parts = text.strip().split(":")
    seconds = 0.0
    for part, scale in zip(parts[:3], (3600, 60, 1), strict=False):
        seconds += float(part) * scale
    if len(parts) > 3:
        seconds += float(parts[3]) / 1000
    return seconds


def _run_sipp(
    workdir: Path, target_port: int, service: str, rate: float, seconds: float,
    scenario: Path = SCENARIO, inject: Inject | None = None,
) -> RunResult:  # fmt: skip
    calls = max(1, int(rate * seconds))
    stat = workdir / f"stat-{service}-{rate:.0f}-{time.monotonic_ns()}.csv"
    extra = ["-inf", str(inject(rate, seconds))] if inject else []
    command = [
        SIPP, f"127.0.0.1:{target_port}", "-sf", str(scenario), "-s", service, *extra,
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mp", str(free_udp_port()),
        "-r", f"{rate:.0f}", "-m", str(calls), "-l", str(max(100, int(rate * 5))),
        "-recv_timeout", "10000", "-timeout", f"{int(seconds * 3 + 30)}s", "-timeout_error",
        "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
        "-max_socket", "1024", "-buff_size", "4194304",
        "-trace_err", "-error_file", str(stat.with_suffix(".err")),
    ]  # fmt: skip
    subprocess.run(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd=workdir, timeout=seconds * 3 + 60, check=False,
    )  # fmt: skip
    with stat.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    last = rows[-1]
    if int(last["SuccessfulCall(C)"]) == 0:
        errors = stat.with_suffix(".err")
        text = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
        raise RuntimeError(f"no call succeeded at {rate:.0f}/s; sipp errors:\n{text}")
    return RunResult(
        rate,
        seconds,
        calls,
        int(last["SuccessfulCall(C)"]),
        int(last["FailedCall(C)"]),
        int(last["Retransmissions(C)"]),
        _elapsed(last["ElapsedTime(C)"]),
    )


def highest_clean_rate(
    console: Console, label: str, workdir: Path, port: int, service: str,
    start: float, seconds: float, probe_seconds: float,
    scenario: Path = SCENARIO, inject: Inject | None = None,
) -> tuple[RunResult | None, list[RunResult]]:  # fmt: skip
    runs: list[RunResult] = []

    def run_sipp(workdir: Path, port: int, service: str, rate: float, length: float) -> RunResult:
        return _run_sipp(workdir, port, service, rate, length, scenario, inject)

    rate, last_clean = start, 0.0
    while rate < 20000:
        result = run_sipp(workdir, port, service, rate, probe_seconds)
        runs.append(result)
        console.log(f"{label}: probe {rate:.0f}/s -> {_describe(result, probe_seconds)}")
        if not result.clean(probe_seconds):
            break
        last_clean = rate
        rate *= 1.5
    dirty = rate
    for _ in range(2):  # bisect between the last clean and the first dirty probe
        if not last_clean:
            break
        middle = round((last_clean + dirty) / 2)
        result = run_sipp(workdir, port, service, middle, probe_seconds)
        runs.append(result)
        console.log(f"{label}: probe {middle:.0f}/s -> {_describe(result, probe_seconds)}")
        if result.clean(probe_seconds):
            last_clean = middle
        else:
            dirty = middle
    rate = last_clean or start / 2
    for _ in range(12):
        result = run_sipp(workdir, port, service, rate, seconds)
        runs.append(result)
        console.log(f"{label}: full {rate:.0f}/s -> {_describe(result, seconds)}")
        if result.clean(seconds):
            return result, runs
        rate = max(1.0, round(rate * 0.9))
    return None, runs


def _describe(result: RunResult, seconds: float) -> str:
    state = "clean" if result.clean(seconds) else "NOT clean"
    return (
        f"{state}: {result.successful}/{result.calls} ok, {result.failed} failed, "
        f"{result.retransmissions} retrans, {result.elapsed:.1f} s"
    )


def create_conference(kamailio_port: int) -> str:
    async def main() -> str:
        ua = await UserAgent.start("127.0.0.1", identity=ALICE)
        try:
            inline = base64.b64encode(secrets.token_bytes(30)).decode()
            sdp = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio 30000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n"
            ).encode()
            call = await ua.invite(
                f"sip:conf-factory@127.0.0.1:{kamailio_port}",
                sdp,
                extra_headers=[("P-Asserted-Identity", f"<{ALICE}>")],
                timeout=5,
            )
            header = call.response.get("X-Secconf-Conference") if call.response else None
            if not header:
                raise RuntimeError("no conference URI in the answer")
            return header.strip("<>").split("@", 1)[0].removeprefix("sip:")
        finally:
            await ua.close()

    return asyncio.run(main())


def cpu_description() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


class KmsBench:
    """The KMS side of (c): the KMS process, Alice's conference, Bob's ticket, injection files."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir = workdir
        self.kms = KmsProcess(workdir / "kms", redis_url, identity=KMS_ID, prefix="sckb-kms")
        self.kms.start()
        self.psks = {who: self.kms.add_user(who) for who in (FOCUS, ALICE, BOB)}
        self.ticket: mikey_ticket.IssuedTicket | None = None

    def settings(self) -> str:
        return KMS_SETTINGS.format(
            kms_url=self.kms.url, kms_identity=KMS_ID, focus=FOCUS, psk_file=self.psks[FOCUS]
        )

    def _client(self, who: str) -> KmsClient:
        return KmsClient(self.kms.url, KMS_ID, who, load_key_file(self.psks[who], "PSK"))

    def create_conference(self, kamailio_port: int) -> str:
        """Alice creates a KMS-mode conference (ticket naming the focus and Bob); Bob's ticket."""

        async def main() -> str:
            ua = await UserAgent.start("127.0.0.1", identity=ALICE)
            alice = ParticipantAgent(ALICE, self._client(ALICE), ua)
            try:
                joined = await alice.join_conference(
                    f"sip:conf-factory@127.0.0.1:{kamailio_port}", FOCUS, allowed=(BOB,),
                    timeout=5,
                )  # fmt: skip
                response = joined.call.response
                header = response.get("X-Secconf-Conference") if response else None
                await joined.media.close(bye=False)
                if not header:
                    raise RuntimeError("no conference URI in the answer")
                self.ticket = await self._client(BOB).request_ticket(
                    mikey_ticket.DesiredPolicy(
                        recipients=(FOCUS,), valid_until=time.time() + 3600,
                        responder_keys=True,
                    )
                )  # fmt: skip
                return header.strip("<>").split("@", 1)[0].removeprefix("sip:")
            finally:
                await ua.close()

        return asyncio.run(main())

    def inject(self, rate: float, seconds: float) -> Path:
        """A fresh TRANSFER_INIT per call of the coming run (distinct SSRCs, fresh timestamps)."""
        if self.ticket is None:
            raise RuntimeError("create the conference first")
        calls = max(1, int(rate * seconds))
        path = self.workdir / f"kms-{time.monotonic_ns()}.csv"
        suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
        now = time.time()
        lines = ["SEQUENTIAL"]
        for ssrc in random.SystemRandom().sample(range(1, 2**32), calls):
            pending = mikey_ticket.build_transfer_init(
                self.ticket, initiator=BOB, responder=FOCUS,
                sessions=[GenericIdEntry.for_srtp(1, [0], SrtpSessionData(ssrc, 0, 0))],
                policies=[policy_for_suite(0, suite)], now=now, random_bytes=secrets.token_bytes,
            )  # fmt: skip
            lines.append(f"{key_mgmt_value(pending.data)};{ssrc}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        self.kms.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of a full run")
    parser.add_argument("--probe-seconds", type=float, default=3.0)
    parser.add_argument("--children", type=int, default=4, help="Kamailio UDP workers")
    parser.add_argument("--start-rate", type=float, default=200.0)
    parser.add_argument(
        "--only", choices=("native", "sdes", "sdes-noedge", "kms"), action="append",
        help="run only these routes (repeatable; default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    wanted = set(args.only or ("native", "sdes", "sdes-noedge", "kms"))
    console = Console()
    for tool in (KAMAILIO, SIPP):
        if not Path(tool).exists():
            sys.exit(
                f"{tool} not found (apt-get install kamailio kamailio-python3-modules sip-tester)"
            )
    results: dict[str, RunResult | None] = {}
    timing: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="secconf-kbench-") as tmp:
        workdir = Path(tmp)
        uas_port = free_udp_port()
        uas = subprocess.Popen(
            [SIPP, "-sf", str(MIXER), "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
             "-mp", str(free_udp_port()), "-max_socket", "1024", "-buff_size", "4194304"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=workdir,
        )  # fmt: skip
        edge: EdgeProcess | None = None
        kms: KmsBench | None = None
        try:
            if "native" in wanted:
                cfg = workdir / "native.cfg"
                cfg.write_text(NATIVE_CFG.format(children=args.children, uas_port=uas_port))
                native = kamailio(workdir / "native", args.children, config=cfg)
                try:
                    results["native"], _ = highest_clean_rate(
                        console, "native", workdir, native.port, "conf-native",
                        args.start_rate, args.seconds, args.probe_seconds,
                    )  # fmt: skip
                finally:
                    native.stop()
            if wanted - {"native"}:
                with RedisProcess(workdir) as redis_process:
                    edge = EdgeProcess(workdir / "edge")
                    edge.start()
                    edge_text = EDGE_SETTINGS.format(edge_url=edge.url, token=edge.token_file)
                    kek = workdir / "kek"
                    generate_key_file(kek)

                    def settings(name: str, *, timing_on: bool = False, edge: bool = True,
                                 kms_text: str = "") -> str:  # fmt: skip
                        return SETTINGS.format(
                            timing=str(timing_on).lower(), alice=ALICE, bob=BOB,
                            uas_port=uas_port, redis_url=redis_process.url, prefix=PREFIX,
                            kek=kek, edge=edge_text if edge else "", kms=kms_text,
                        )  # fmt: skip

                    def measure(key: str, label: str, text: str,
                                create: Callable[[int], str], scenario: Path = SCENARIO,
                                inject: Inject | None = None) -> str:  # fmt: skip
                        focus = kamailio(workdir / key, args.children, text)
                        try:
                            conference = create(focus.port)
                            console.log(f"{label}: conference {conference} created")
                            results[key], _ = highest_clean_rate(
                                console, label, workdir, focus.port, conference,
                                args.start_rate, args.seconds, args.probe_seconds,
                                scenario, inject,
                            )  # fmt: skip
                        finally:
                            focus.stop()
                        return conference

                    if "sdes-noedge" in wanted:
                        measure("sdes-noedge", "secconf SDES join, no edge",
                                settings("noedge", edge=False), create_conference)  # fmt: skip
                    if "kms" in wanted:
                        kms = KmsBench(workdir, redis_process.url)
                        measure("kms", "secconf KMS join", settings("kms", kms_text=kms.settings()),
                                kms.create_conference, KMS_SCENARIO, kms.inject)  # fmt: skip
                    if "sdes" in wanted:
                        conference = measure("sdes", "secconf SDES join", settings("sdes"),
                                             create_conference)  # fmt: skip
                        clean = results["sdes"]
                        timed = kamailio(workdir / "timed", args.children,
                                         settings("sdes", timing_on=True))  # fmt: skip
                        try:
                            rate = max(10.0, round((clean.rate if clean else 100.0) / 2))
                            run = _run_sipp(workdir, timed.port, conference, rate, 5.0)
                            console.log(f"timing run {rate:.0f}/s -> {_describe(run, 5.0)}")
                        finally:
                            timed.stop()  # its workers flush nothing more; read what they wrote
                        client = redis.Redis.from_url(
                            redis_process.url, socket_timeout=2, decode_responses=True
                        )
                        raw = client.hgetall(f"{PREFIX}:timing")
                        client.close()
                        counters = {str(k): int(v) for k, v in raw.items()}
                        invites = counters.pop("invites", 0)
                        if invites:
                            timing = {k[:-3]: v / invites for k, v in counters.items()}
                            timing["invites"] = invites
        finally:
            if kms is not None:
                kms.stop()
            if edge is not None:
                edge.stop()
            stop(uas)
    report(console, args, results, timing)


def report(
    console: Console,
    args: argparse.Namespace,
    results: dict[str, RunResult | None],
    timing: dict[str, float],
) -> None:
    table = Table(title=f"Kamailio 5.6 on {cpu_description()}; {args.children} UDP workers, "
                  f"clean = {args.seconds:.0f} s with zero failed calls and zero retransmissions")  # fmt: skip
    table.add_column("route")
    table.add_column("clean calls/s", justify="right")
    table.add_column("calls", justify="right")
    table.add_column("vs native", justify="right")
    native = results.get("native")
    names = {"native": "(a) native relay (cfg script, t_relay)",
             "sdes": "(b) secconf SDES join (Redis + edge + rewrite)",
             "sdes-noedge": "(b0) secconf SDES join, no media edge (Redis + rewrite)",
             "kms": "(c) secconf KMS join (+ KMS RESOLVE, edge)"}  # fmt: skip
    for key, result in results.items():
        if result is None:
            table.add_row(names[key], "none clean", "", "")
            continue
        ratio = f"{result.rate / native.rate:.0%}" if native and key != "native" else ""
        table.add_row(names[key], f"{result.rate:.0f}", str(result.calls), ratio)
    console.print(table)
    if timing:
        split = Table(title=f"secconf per-INVITE time (µs, mean of {timing['invites']:.0f} "
                      "answered INVITEs; redis and edge include the BYE's release; "
                      "\\[focus] timing = true)")  # fmt: skip
        split.add_column("phase")
        split.add_column("µs per INVITE", justify="right")
        for phase in ("parse", "redis", "edge", "rewrite", "kms", "request", "reply"):
            if phase in timing:
                split.add_row(phase, f"{timing[phase]:.0f}")
        inner = timing.get("request", 0) + timing.get("reply", 0)
        split.add_row("total in Python (request + reply)", f"{inner:.0f}")
        console.print(split)


if __name__ == "__main__":
    main()
