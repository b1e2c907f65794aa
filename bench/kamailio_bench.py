"""Kamailio module benchmark: clean calls/s of native relaying vs secconf SDES joins (sipp).

Run with ``.venv/bin/python bench/kamailio_bench.py [--seconds 15] [--children 4]``.
Everything runs on this host, on loopback: a real redis-server
(:class:`secconf.lab.services.redis_server.RedisProcess`), the real media edge (``secconf edge
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

``--compare-ref REF`` (issue 12, the gate's cost) measures instead, in one run,
the module of this checkout ("new") against the module of *REF* ("old":
``plugin/`` and ``config/kamailio/`` of REF unpacked with ``git archive``,
REF's ``plugin`` first on ``SECCONF_PYTHONPATH``, REF's cfg and entry script,
each variant its own TOML since the gate changed the settings): (a) once,
then (b0) and (b) as above, ``--trials`` searches per variant interleaved
(old, new / new, old alternately, a fresh Kamailio per search); then the CPU
per call at one fixed rate below both ceilings (``/proc/<pid>/stat`` of
every Kamailio process, and of redis-server, Redis commands per call from
``INFO commandstats``; a fresh sipp mixer per run whose own counters prove
that every ACK and BYE went through the focus's in-dialog route); then one
profiling run per variant (``[focus] timing = true`` plus the time of each
KEMI callback per SIP method, taken by the bench's entry-script wrapper, not
by the module).  Both variants load through that wrapper, which also writes
the path of the ``secconf`` package Kamailio imported, checked against the
variant's tree.  The UAC pauses ``--ack-bye-pause`` ms (100) between ACK and
BYE: sent at once, the BYE can overtake its ACK between Kamailio's workers
(one CPU run per variant with the plain scenario shows how often).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import json
import os
import platform
import pstats
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from secconf.client.agent import ParticipantAgent
from secconf.client.sip import UserAgent
from secconf.core.keymgmt import key_mgmt_value
from secconf.core.mikey import GenericIdEntry, SrtpSessionData
from secconf.core.mikey import ticket as mikey_ticket
from secconf.core.mikey.srtp import policy_for_suite
from secconf.core.sdes import SUITES
from secconf.kms.async_client import KmsClient
from secconf.lab.services.edge import EdgeProcess
from secconf.lab.services.kamailio import KamailioProcess
from secconf.lab.services.kms import KmsProcess
from secconf.lab.services.process import free_port
from secconf.lab.services.redis_server import RedisProcess
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


def free_media_ports() -> int:
    """A base for sipp's ``-mp``: it binds base..base+3 (audio and video RTP/RTCP)."""
    for _ in range(50):
        base = free_port(socket.SOCK_DGRAM) & ~3
        probes = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    return free_port(socket.SOCK_DGRAM)


class SippBindError(RuntimeError):
    """sipp could not bind a port another process took meanwhile (shared machine)."""


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
    """One sipp UAC run; run again (up to 3 times) when sipp could not bind its ports."""
    for attempt in range(3):
        try:
            return _run_sipp_once(workdir, target_port, service, rate, seconds, scenario, inject)
        except SippBindError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _run_sipp_once(
    workdir: Path, target_port: int, service: str, rate: float, seconds: float,
    scenario: Path, inject: Inject | None,
) -> RunResult:  # fmt: skip
    calls = max(1, int(rate * seconds))
    stat = workdir / f"stat-{service}-{rate:.0f}-{time.monotonic_ns()}.csv"
    extra = ["-inf", str(inject(rate, seconds))] if inject else []
    command = [
        SIPP, f"127.0.0.1:{target_port}", "-sf", str(scenario), "-s", service, *extra,
        "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-mp", str(free_media_ports()),
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
    errors = stat.with_suffix(".err")
    text = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    rows: list[dict[str, str]] = []
    if stat.exists():
        with stat.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=";"))
    if not rows or int(rows[-1]["SuccessfulCall(C)"]) == 0:
        error = SippBindError if "Unable to bind" in text else RuntimeError
        raise error(f"no call succeeded at {rate:.0f}/s; sipp errors:\n{text}")
    last = rows[-1]
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


# -- --compare-ref: the module of this checkout against the module of another commit ----------

#: The module's TOML for code from before the gate (issue 12): bare source IPs, no [lab] table
#: (that code reads "udp:127.0.0.1" as an address no request comes from; the gate's code
#: refuses "127.0.0.1" at start-up, so neither variant can run on the other's settings).
OLD_SETTINGS = """
[focus]
domain = "conf.bench.invalid"
timing = {timing}

[identity]
trusted_sources = ["127.0.0.1"]

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

#: The app_python3 entry script of both variants: the variant's own entry script, run in this
#: module's namespace (it defines ``mod_init``), then the path of the secconf package it
#: imported written where the bench checks it.  With SECCONF_BENCH_PROFILE (a directory) every
#: KEMI callback is timed per SIP method ($rm), wall clock and the worker's CPU time, the sums
#: written there per process; with SECCONF_BENCH_CPROFILE=1 also under cProfile (CPU time),
#: one profile per callback and method.  The bench's profiler: the module itself is unchanged.
ENTRY_WRAPPER = '''"""bench/kamailio_bench.py --compare-ref: a variant's entry script, loaded and checked."""

import cProfile
import json
import os
import time
from pathlib import Path

_ENTRY = os.environ["SECCONF_BENCH_ENTRY"]
exec(compile(Path(_ENTRY).read_text(), _ENTRY, "exec"))  # noqa: S102 - defines mod_init

import secconf as _secconf  # noqa: E402

Path(os.environ["SECCONF_BENCH_LOADED"]).write_text(str(Path(_secconf.__file__).resolve()))

_PROFILE = os.environ.get("SECCONF_BENCH_PROFILE", "")
_CPROFILE = os.environ.get("SECCONF_BENCH_CPROFILE", "") == "1"


class _Profiled:
    """The module's KEMI object, each ksr_* callback timed per callback and $rm."""

    def __init__(self, target):
        import KSR

        self._target = target
        self._ksr = KSR
        self._totals = {}
        self._profilers = {}
        self._active = False  # one profiler at a time (onsend_route runs inside t_relay)
        self._count = 0

    def __getattr__(self, name):
        attribute = getattr(self._target, name)
        if not name.startswith("ksr_") or not callable(attribute):
            return attribute

        def call(*args):
            key = f"{name} {self._ksr.pv.get('$rm')}"
            profiler = None
            if _CPROFILE and not self._active:
                self._active = True
                profiler = self._profilers.get(key)
                if profiler is None:
                    profiler = self._profilers[key] = cProfile.Profile(time.process_time)
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler is not None:
                profiler.enable()
            try:
                return attribute(*args)
            finally:
                if profiler is not None:
                    profiler.disable()
                    self._active = False
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                total = self._totals.setdefault(key, [0, 0.0, 0.0])
                total[0] += 1
                total[1] += wall
                total[2] += cpu
                self._count += 1
                if self._count % 50 == 0:
                    self._flush()

        return call

    def _flush(self):
        directory = Path(_PROFILE)
        (directory / f"{os.getpid()}.json").write_text(json.dumps(self._totals))
        for key, profiler in self._profilers.items():
            profiler.dump_stats(str(directory / f"{os.getpid()}-{key.replace(' ', '-')}.prof"))


if _PROFILE:
    _module_init = mod_init  # noqa: F821 - from the exec above

    def mod_init():
        return _Profiled(_module_init())
'''


@dataclass(frozen=True)
class Variant:
    """One module tree to measure: its code, cfg, entry script and settings template."""

    name: str  # "old" / "new"
    commit: str
    plugin: Path  # first on SECCONF_PYTHONPATH
    config: Path
    entry: Path
    template: str


class VariantKamailio(KamailioProcess):
    """:class:`KamailioProcess` with another app_python3 entry script (the bench's wrapper)."""

    def __init__(self, workdir: Path, settings: str, *, entry: Path, **kwargs: object) -> None:
        super().__init__(workdir, settings, **kwargs)  # type: ignore[arg-type]
        self.entry = entry

    def command(self, port: int, tls_port: int = 0) -> list[str]:
        return [
            f'SECCONF_KEMI="{self.entry}"' if arg.startswith("SECCONF_KEMI=") else arg
            for arg in super().command(port, tls_port)
        ]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def unpack_ref(ref: str, directory: Path) -> Path:
    """``plugin/`` and ``config/kamailio/`` of *ref* unpacked under *directory* (returned)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "plugin", "config/kamailio"],
        capture_output=True, check=True,
    )  # fmt: skip
    directory.mkdir(parents=True)
    tar_path = directory.parent / f"{directory.name}.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(directory)  # noqa: S202 - this repository's own archive
    return directory


def proc_cpu(pids: list[int]) -> dict[int, int]:
    """utime + stime (clock ticks) of *pids* and all their descendants, per process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    wanted = {pid for pid in pids if pid in table}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return {pid: table[pid][1] for pid in wanted}


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    ticks = sum(after[pid] - before[pid] for pid in after if pid in before)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, sum(fields) / tick


def others_busy(seconds: float) -> float:
    """Cores busy on this machine over *seconds* (before the bench starts anything)."""
    busy0, _ = machine_busy()
    time.sleep(seconds)
    busy1, _ = machine_busy()
    return (busy1 - busy0) / seconds


def start_mixer(workdir: Path, port: int, stat: Path | None = None) -> subprocess.Popen[bytes]:
    trace = ["-trace_stat", "-stf", str(stat), "-fd", "1"] if stat else []
    return subprocess.Popen(
        [SIPP, "-sf", str(MIXER), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
         "-mp", str(free_media_ports()), "-max_socket", "1024", "-buff_size", "4194304", *trace],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=workdir,
    )  # fmt: skip


def mixer_counts(stat: Path) -> tuple[int, int]:
    """The sipp mixer's (successful, failed) calls so far: its scenario ends after the BYE."""
    with stat.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if not rows:
        return 0, 0
    return int(rows[-1]["SuccessfulCall(C)"]), int(rows[-1]["FailedCall(C)"])


def redis_commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict) and name not in ("cmdstat_info",)
    }


@dataclass
class CpuRun:
    calls: int
    clean: bool
    kamailio_us: float  # Kamailio CPU per successful call
    redis_us: float
    commands: dict[str, float]  # Redis commands per call
    mixer_ok: int  # mixer calls completed (INVITE, ACK, BYE all received)
    mixer_failed: int
    busy_cores: float  # the whole machine over the run
    ours_cores: float  # Kamailio + Redis + edge + both sipps


SCENARIOS = {"noedge": "(b0) SDES join, no edge", "edge": "(b) SDES join with the edge"}

#: The callbacks whose cProfile is summarized (the rest is written out whole).
PROFILED = (
    "ksr_request_route INVITE",
    "ksr_onreply_secconf INVITE",
    "ksr_request_route ACK",
    "ksr_request_route BYE",
)


def dialog_scenario(directory: Path, pause_ms: int) -> Path:
    """bench/sipp/sdes_join.xml with *pause_ms* between the ACK and the BYE (0: itself).

    Sent at once, the BYE may overtake its ACK between Kamailio's workers; both go through
    the focus's in-dialog route either way, but only in order does every ACK reach the mixer.
    """
    if pause_ms <= 0:
        return SCENARIO
    text = SCENARIO.read_text()
    bye = '  <send retrans="500">\n    <![CDATA[\n\n      BYE '
    if text.count(bye) != 1:
        raise RuntimeError(f"no BYE to put a pause before in {SCENARIO}")
    path = directory / f"sdes_join_pause{pause_ms}.xml"
    path.write_text(text.replace(bye, f'  <pause milliseconds="{pause_ms}"/>\n\n{bye}'))
    return path


class Comparison:
    """--compare-ref: both variants' searches, CPU runs and profiles, in one run."""

    def __init__(self, args: argparse.Namespace, console: Console, workdir: Path) -> None:
        self.args = args
        self.console = console
        self.workdir = workdir
        self.scenario_file = dialog_scenario(workdir, args.ack_bye_pause)
        self.searches: dict[tuple[str, str], list[RunResult | None]] = {}
        self.loads: list[float] = []
        self.failures = 0
        self.cpu: dict[tuple[str, str], list[CpuRun]] = {}
        self.at_once: dict[tuple[str, str], list[CpuRun]] = {}
        self.cpu_rates: dict[str, float] = {}
        self.timing: dict[tuple[str, str], dict[str, float]] = {}
        self.profile: dict[tuple[str, str], dict[str, tuple[int, float, float]]] = {}
        self.cprofile: dict[tuple[str, str], dict[str, list[tuple[str, float]]]] = {}
        self.native: RunResult | None = None
        self.variants: tuple[Variant, Variant] | None = None
        self.others_before = 0.0
        self.load_before = os.getloadavg()
        self.load_after = self.load_before
        self.started = time.strftime("%Y-%m-%d %H:%M")
        self.elapsed = 0.0
        self.entry = workdir / "entry" / "secconf_bench_kemi.py"
        self.uas_port = 0
        self.redis_url = ""
        self.kek = workdir / "kek"
        self.edge = EdgeProcess(workdir / "edge")

    # -- set-up ------------------------------------------------------------------------

    def prepare(self) -> tuple[Variant, Variant]:
        ref = self.args.compare_ref
        commit = _git("rev-parse", "--short", f"{ref}^{{commit}}")
        head = _git("rev-parse", "--short", "HEAD")
        if _git("status", "--porcelain", "--", "plugin", "config/kamailio"):
            head += "+changes"
        tree = unpack_ref(commit, self.workdir / f"ref-{commit}")
        old = Variant(
            "old", commit, tree / "plugin", tree / "config/kamailio/kamailio.cfg",
            tree / "config/kamailio/secconf_kemi.py", self.args.ref_settings or OLD_SETTINGS,
        )  # fmt: skip
        new = Variant(
            "new", head, ROOT / "plugin", CFG, ROOT / "config/kamailio/secconf_kemi.py", SETTINGS
        )
        self.entry.parent.mkdir()
        self.entry.write_text(ENTRY_WRAPPER)
        self.variants = (old, new)
        return old, new

    def focus(
        self, variant: Variant, scenario: str, uas_port: int, *, timing: bool = False,
        profile: Path | None = None, cprofile: bool = False, tag: str = "",
    ) -> tuple[VariantKamailio, str]:  # fmt: skip
        """A fresh Kamailio running *variant*'s code (checked), and a conference created on it."""
        workdir = self.workdir / f"{variant.name}-{scenario}-{tag}-{time.monotonic_ns()}"
        workdir.mkdir()
        edge = ""
        if scenario == "edge":
            edge = EDGE_SETTINGS.format(edge_url=self.edge.url, token=self.edge.token_file)
        settings = variant.template.format(
            timing=str(timing).lower(), alice=ALICE, bob=BOB, uas_port=uas_port,
            redis_url=self.redis_url, prefix=f"{PREFIX}-{variant.name}-{scenario}{tag}",
            kek=self.kek, edge=edge, kms="",
        )  # fmt: skip
        loaded = workdir / "loaded"
        env = {
            "SECCONF_PYTHONPATH": os.pathsep.join(
                [str(variant.plugin), sysconfig.get_paths()["purelib"]]
            ),
            "SECCONF_BENCH_ENTRY": str(variant.entry),
            "SECCONF_BENCH_LOADED": str(loaded),
            "SECCONF_BENCH_PROFILE": str(profile or ""),
            "SECCONF_BENCH_CPROFILE": "1" if cprofile else "",
        }
        process = VariantKamailio(
            workdir, settings, entry=self.entry, env=env, children=self.args.children,
            config=variant.config, debug=1, memory=(256, 32),
        )  # fmt: skip
        process.start()
        try:
            imported = Path(loaded.read_text())
            if not imported.is_relative_to(variant.plugin.resolve()):
                raise RuntimeError(f"{variant.name}: Kamailio imported {imported}")
            conference = create_conference(process.port)
        except BaseException:
            process.stop()
            raise
        return process, conference

    # -- the measurements -------------------------------------------------------------

    def search(self, variant: Variant, scenario: str, trial: int) -> None:
        label = f"{variant.name} {variant.commit} {scenario} #{trial + 1}"
        focus, conference = self.focus(variant, scenario, self.uas_port)
        result: RunResult | None = None
        try:
            result, _ = highest_clean_rate(
                self.console, label, self.workdir, focus.port, conference,
                self.args.start_rate, self.args.seconds, self.args.probe_seconds,
                self.scenario_file,
            )  # fmt: skip
        except RuntimeError as exc:  # reported as "failed" in the trials, not in the median
            self.console.log(f"{label}: search FAILED: {exc}")
            self.failures += 1
        finally:
            focus.stop()
        self.loads.append(os.getloadavg()[0])
        self.searches.setdefault((variant.name, scenario), []).append(result)

    def cpu_run(self, variant: Variant, scenario: str, rate: float, scenario_file: Path) -> CpuRun:
        """One run at *rate*: CPU of Kamailio and Redis per call, with a mixer of its own."""
        seconds = self.args.cpu_seconds
        uas_port = free_port(socket.SOCK_DGRAM)
        stat = self.workdir / f"mixer-{variant.name}-{scenario}-{time.monotonic_ns()}.csv"
        uas = start_mixer(self.workdir, uas_port, stat)
        focus: VariantKamailio | None = None
        try:
            focus, conference = self.focus(variant, scenario, uas_port, tag="cpu")
            time.sleep(1.5)  # the mixer's first stat row
            mixer_before = mixer_counts(stat)
            client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
            redis_pid = int(client.info("server")["process_id"])
            edge_pid = self.edge.process.pid if self.edge.process else 0
            kamailio_pids, others = [focus.pid or 0], [redis_pid, edge_pid, uas.pid]
            k0, r0, o0 = proc_cpu(kamailio_pids), proc_cpu([redis_pid]), proc_cpu(others)
            c0, times0, (busy0, _) = redis_commands(client), os.times(), machine_busy()
            start = time.monotonic()
            run = _run_sipp(self.workdir, focus.port, conference, rate, seconds, scenario_file)
            window = time.monotonic() - start
            busy1, _ = machine_busy()
            times1 = os.times()
            k1, r1, o1 = proc_cpu(kamailio_pids), proc_cpu([redis_pid]), proc_cpu(others)
            c1 = redis_commands(client)
            client.close()
            time.sleep(2.5)  # the mixer's stat row after its last BYE
            mixer_after = mixer_counts(stat)
        finally:
            if focus is not None:
                focus.stop()
            stop(uas)
        ok = max(1, run.successful)
        uac = (times1.children_user + times1.children_system) - (
            times0.children_user + times0.children_system
        )  # the sipp UAC, reaped
        kamailio_s = cpu_seconds(k0, k1)
        result = CpuRun(
            calls=run.calls,
            clean=run.clean(seconds),
            kamailio_us=kamailio_s / ok * 1e6,
            redis_us=cpu_seconds(r0, r1) / ok * 1e6,
            commands={k: (v - c0.get(k, 0)) / ok for k, v in c1.items() if v - c0.get(k, 0)},
            mixer_ok=mixer_after[0] - mixer_before[0],
            mixer_failed=mixer_after[1] - mixer_before[1],
            busy_cores=(busy1 - busy0) / window,
            ours_cores=(kamailio_s + cpu_seconds(o0, o1) + uac) / window,
        )
        self.console.log(
            f"cpu {variant.name} {scenario} {rate:.0f}/s {scenario_file.name} -> "
            f"{_describe(run, seconds)}; Kamailio {result.kamailio_us:.0f} µs/call, Redis "
            f"{result.redis_us:.0f} µs/call, mixer {result.mixer_ok} ok "
            f"{result.mixer_failed} failed; machine {result.busy_cores:.2f} cores busy, ours "
            f"{result.ours_cores:.2f}"
        )
        return result

    def profile_run(
        self, variant: Variant, scenario: str, rate: float, *, cprofile: bool = False
    ) -> None:
        """[focus] timing and the bench's per-callback times (or, *cprofile*, cProfile)."""
        kind = "cprofile" if cprofile else "profile"
        directory = self.workdir / f"{kind}-{variant.name}-{scenario}"
        directory.mkdir()
        focus, conference = self.focus(
            variant, scenario, self.uas_port, timing=not cprofile, profile=directory,
            cprofile=cprofile, tag=kind,
        )  # fmt: skip
        try:
            run = _run_sipp(
                self.workdir, focus.port, conference, rate, self.args.cpu_seconds,
                self.scenario_file,
            )  # fmt: skip
        finally:
            focus.stop()
        self.console.log(
            f"{kind} {variant.name} {scenario} {rate:.0f}/s -> "
            f"{_describe(run, self.args.cpu_seconds)}"
        )
        totals: dict[str, tuple[int, float, float]] = {}
        for path in directory.glob("*.json"):
            for key, (count, wall, cpu) in json.loads(path.read_text()).items():
                had = totals.get(key, (0, 0.0, 0.0))
                totals[key] = (had[0] + int(count), had[1] + float(wall), had[2] + float(cpu))
        if cprofile:
            self.cprofile[(variant.name, scenario)] = self._cprofile(directory, totals)
            return
        self.profile[(variant.name, scenario)] = totals
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, decode_responses=True)
        raw = client.hgetall(f"{PREFIX}-{variant.name}-{scenario}{kind}:timing")
        client.close()
        counters = {str(k): int(v) for k, v in raw.items()}
        invites = counters.pop("invites", 0)
        if invites:
            timing = {k[:-3]: v / invites for k, v in counters.items()}
            timing["invites"] = invites
            self.timing[(variant.name, scenario)] = timing

    def _cprofile(
        self, directory: Path, totals: dict[str, tuple[int, float, float]]
    ) -> dict[str, list[tuple[str, float]]]:
        """Per callback: its heaviest functions, cumulative CPU µs per callback call."""
        summary: dict[str, list[tuple[str, float]]] = {}
        out = self.args.profile_out
        for key in sorted(totals):
            files = sorted(directory.glob(f"*-{key.replace(' ', '-')}.prof"))
            if not files:
                continue
            stats = pstats.Stats(*(str(f) for f in files))
            calls = totals[key][0]
            rows: list[tuple[str, float]] = []
            groups = {"redis-py, self time of all its functions": 0.0,
                      "Kamailio KSR.* calls, self time": 0.0}  # fmt: skip
            for (filename, line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
                if "/site-packages/redis/" in filename:
                    groups["redis-py, self time of all its functions"] += entry[2]
                elif "KSR." in function:
                    groups["Kamailio KSR.* calls, self time"] += entry[2]
                if "/secconf/" in filename:
                    where = filename.split("/secconf/", 1)[1]
                    rows.append((f"{where}:{line} {function}", entry[3] / calls * 1e6))
            rows += [(f"({name})", seconds / calls * 1e6) for name, seconds in groups.items()]
            rows.sort(key=lambda row: -row[1])
            summary[key] = rows
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                name = f"{directory.name}-{key.replace(' ', '-')}.txt"
                with (out / name).open("w") as handle:
                    stats.stream = handle  # type: ignore[attr-defined]
                    stats.sort_stats("cumulative").print_stats(60)
                stats.dump_stats(str(out / name.replace(".txt", ".prof")))  # for pstats diffs
        return summary

    def run(self) -> None:
        args = self.args
        started = time.monotonic()
        old, new = self.prepare()
        self.console.log(f"old = {old.commit} ({old.plugin}), new = {new.commit} ({new.plugin})")
        self.others_before = others_busy(5.0)
        self.load_before = os.getloadavg()
        self.console.log(
            f"before the run: {self.others_before:.2f} of {os.cpu_count()} cores busy "
            f"(others), load average {self.load_before[0]:.2f}"
        )
        self.uas_port = free_port(socket.SOCK_DGRAM)
        uas = start_mixer(self.workdir, self.uas_port)
        try:
            if not args.skip_native:
                cfg = self.workdir / "native.cfg"
                cfg.write_text(NATIVE_CFG.format(children=args.children, uas_port=self.uas_port))
                native = kamailio(self.workdir / "native", args.children, config=cfg)
                try:
                    self.native, _ = highest_clean_rate(
                        self.console, "native", self.workdir, native.port, "conf-native",
                        args.start_rate, args.seconds, args.probe_seconds, self.scenario_file,
                    )  # fmt: skip
                finally:
                    native.stop()
            with RedisProcess(self.workdir) as redis_process:
                self.redis_url = redis_process.url
                generate_key_file(self.kek)
                self.edge.start()
                try:
                    self._measure(old, new)
                finally:
                    self.edge.stop()
        finally:
            stop(uas)
        self.load_after = os.getloadavg()
        self.elapsed = time.monotonic() - started

    def _measure(self, old: Variant, new: Variant) -> None:
        args = self.args
        for scenario in args.scenarios:
            for trial in range(args.trials):
                for variant in (old, new) if trial % 2 == 0 else (new, old):
                    self.search(variant, scenario, trial)
        for scenario in args.scenarios:
            ceilings = [
                self.median(variant.name, scenario) or args.start_rate for variant in (old, new)
            ]
            rate = args.cpu_rate or max(10.0, round(min(ceilings) * 0.5))
            self.cpu_rates[scenario] = rate
            for trial in range(args.cpu_trials):
                for variant in (old, new) if trial % 2 == 0 else (new, old):
                    run = self.cpu_run(variant, scenario, rate, self.scenario_file)
                    self.cpu.setdefault((variant.name, scenario), []).append(run)
            if self.scenario_file != SCENARIO:
                for variant in (old, new):  # ACK and BYE sent at once: what reaches the mixer
                    run = self.cpu_run(variant, scenario, rate, SCENARIO)
                    self.at_once.setdefault((variant.name, scenario), []).append(run)
            for variant in (old, new):
                self.profile_run(variant, scenario, rate)
            if scenario == "noedge":  # cProfile costs several times the callbacks' own time
                for variant in (old, new):
                    self.profile_run(variant, scenario, max(10.0, round(rate / 5)), cprofile=True)

    # -- the report -------------------------------------------------------------------

    def median(self, name: str, scenario: str) -> float | None:
        rates = [r.rate for r in self.searches.get((name, scenario), []) if r is not None]
        return statistics.median(rates) if rates else None

    def report(self) -> None:
        if self.variants is None:
            return
        old, new = self.variants
        args = self.args
        lines = [
            f"Kamailio 5.6 on {cpu_description()}; {args.children} UDP workers; "
            f"old = {old.commit}, new = {new.commit}; {args.trials} interleaved searches per "
            f"variant, full runs {args.seconds:.0f} s, probes {args.probe_seconds:.0f} s, "
            f"scenario {self.scenario_file.name}; {self.started}, {self.elapsed / 60:.0f} min",
            f"load: {self.others_before:.2f} cores busy by others before the run; load average "
            f"{self.load_before[0]:.2f} before, {self.load_after[0]:.2f} after, "
            f"{min(self.loads, default=0):.2f}-{max(self.loads, default=0):.2f} after each search"
            + (f"; {self.failures} searches FAILED (see the log)" if self.failures else ""),
        ]
        native = f"{self.native.rate:.0f}" if self.native else "not measured / none clean"
        lines += [
            f"(a) native relay (sipp's own ceiling through a C-only Kamailio): {native} calls/s",
            "",
            "| scenario | old calls/s (median) | new calls/s (median) | new/old | old trials "
            "| new trials |",
            "|---|---|---|---|---|---|",
        ]
        for scenario in args.scenarios:
            o, n = self.median("old", scenario), self.median("new", scenario)
            ratio = f"{n / o:.3f}" if o and n else "-"
            trials = {
                name: ", ".join(
                    f"{r.rate:.0f}" if r else "none/failed"
                    for r in self.searches.get((name, scenario), [])
                )
                for name in ("old", "new")
            }
            lines.append(
                f"| {SCENARIOS[scenario]} | {o or 0:.0f} | {n or 0:.0f} | {ratio} "
                f"| {trials['old']} | {trials['new']} |"
            )
        lines += [
            "",
            "| scenario | rate | variant | Kamailio CPU µs/call: median (runs) | Redis CPU "
            "µs/call | Redis commands/call | mixer calls ok/failed | clean | machine busy "
            "(ours), cores |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for scenario in args.scenarios:
            medians: dict[str, float] = {}
            for name in ("old", "new"):
                runs = self.cpu.get((name, scenario), [])
                if not runs:
                    continue
                medians[name] = statistics.median(r.kamailio_us for r in runs)
                lines.append(
                    f"| {SCENARIOS[scenario]} | {self.cpu_rates[scenario]:.0f}/s | {name} "
                    f"| {medians[name]:.0f} ({', '.join(f'{r.kamailio_us:.0f}' for r in runs)}) "
                    + self._cpu_cells(runs)
                )
            if len(medians) == 2:
                lines.append(
                    f"| {SCENARIOS[scenario]} | | new/old | {medians['new'] / medians['old']:.3f} "
                    "| | | | | |"
                )
        if self.at_once:
            lines += ["", f"ACK and BYE sent at once ({SCENARIO.name}), same rate:", ""]
            for (name, scenario), runs in sorted(self.at_once.items()):
                lines.append(
                    f"| {SCENARIOS[scenario]} | {self.cpu_rates[scenario]:.0f}/s | {name} "
                    f"| {statistics.median(r.kamailio_us for r in runs):.0f} "
                    + self._cpu_cells(runs)
                )
        for scenario in args.scenarios:
            lines += self._profile_lines(scenario)
        self.console.print("\n".join(lines), markup=False, highlight=False)

    @staticmethod
    def _cpu_cells(runs: list[CpuRun]) -> str:
        commands: dict[str, list[float]] = {}
        for r in runs:
            for command, per_call in r.commands.items():
                commands.setdefault(command, []).append(per_call)
        listed = ", ".join(
            f"{command} {statistics.median(values):.2f}"
            for command, values in sorted(commands.items())
            if statistics.median(values) >= 0.05
        )
        busy = statistics.median(r.busy_cores for r in runs)
        ours = statistics.median(r.ours_cores for r in runs)
        return (
            f"| {statistics.median(r.redis_us for r in runs):.0f} | {listed} "
            f"| {sum(r.mixer_ok for r in runs)}/{sum(r.mixer_failed for r in runs)} "
            f"| {'yes' if all(r.clean for r in runs) else 'NO'} | {busy:.2f} ({ours:.2f}) |"
        )

    def _profile_lines(self, scenario: str) -> list[str]:
        lines: list[str] = []
        profiles = {name: self.profile.get((name, scenario), {}) for name in ("old", "new")}
        keys = sorted(set(profiles["old"]) | set(profiles["new"]))
        if keys:
            lines += [
                "",
                f"Python per KEMI callback, {SCENARIOS[scenario]}, "
                f"{self.cpu_rates[scenario]:.0f}/s ([focus] timing on): count, CPU µs, wall µs",
                "",
                "| callback $rm | old | new | CPU new - old per call |",
                "|---|---|---|---|",
            ]
            for key in keys:
                cells, cpu = [], []
                for name in ("old", "new"):
                    count, wall, used = profiles[name].get(key, (0, 0.0, 0.0))
                    cells.append(
                        f"{count}: {used / count * 1e6:.0f} / {wall / count * 1e6:.0f}"
                        if count
                        else "-"
                    )
                    cpu.append(used / count * 1e6 if count else 0.0)
                lines.append(f"| {key} | {cells[0]} | {cells[1]} | {cpu[1] - cpu[0]:+.0f} |")
        for name in ("old", "new"):
            timing = self.timing.get((name, scenario))
            if timing:
                phases = ", ".join(
                    f"{phase} {timing[phase]:.0f}"
                    for phase in ("parse", "redis", "edge", "rewrite", "request", "reply")
                    if phase in timing
                )
                lines.append(
                    f"\n{name}: [focus] timing, µs per answered INVITE "
                    f"({timing['invites']:.0f}): {phases}"
                )
        for name in ("old", "new"):
            summary = self.cprofile.get((name, scenario), {})
            for key in PROFILED:
                rows = summary.get(key)
                if not rows:
                    continue
                total = rows[0][1] or 1.0
                lines += ["", f"cProfile {name} {key} (CPU µs per callback, cumulative):"]
                lines += [
                    f"  {us:8.0f}  {function}"
                    for function, us in rows
                    if us >= total * self.args.profile_floor
                ][: self.args.profile_rows]
        return lines


def compare(args: argparse.Namespace, console: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="secconf-kbench-cmp-") as tmp:
        comparison = Comparison(args, console, Path(tmp))
        try:
            comparison.run()
        finally:
            comparison.report()


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
    parser.add_argument(
        "--compare-ref", metavar="REF",
        help="instead: this checkout's module against REF's (issue 12: the gate's cost)",
    )  # fmt: skip
    parser.add_argument("--trials", type=int, default=3, help="--compare-ref: searches each")
    parser.add_argument("--cpu-trials", type=int, default=3, help="--compare-ref: CPU runs each")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument(
        "--cpu-rate", type=float, help="--compare-ref: fixed rate of the CPU runs "
        "(default: half the lower median clean rate)",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", dest="scenarios", choices=tuple(SCENARIOS), action="append",
        help="--compare-ref: noedge (b0), edge (b); repeatable; default both",
    )  # fmt: skip
    parser.add_argument(
        "--ref-settings", type=Path, help="--compare-ref: the old module's TOML template "
        "(default: OLD_SETTINGS, the module before the gate)",
    )  # fmt: skip
    parser.add_argument(
        "--ack-bye-pause", type=int, default=100, metavar="MS",
        help="--compare-ref: pause between ACK and BYE (0: sent at once, as sdes_join.xml)",
    )  # fmt: skip
    parser.add_argument("--skip-native", action="store_true", help="--compare-ref: no (a)")
    parser.add_argument(
        "--profile-out", type=Path, help="--compare-ref: write the whole cProfile reports here"
    )
    parser.add_argument("--profile-rows", type=int, default=14)
    parser.add_argument("--profile-floor", type=float, default=0.03)
    args = parser.parse_args()
    if args.ref_settings is not None:
        args.ref_settings = args.ref_settings.read_text()
    args.scenarios = args.scenarios or list(SCENARIOS)
    console = Console()
    if args.compare_ref:
        for tool in (KAMAILIO, SIPP):
            if not Path(tool).exists():
                sys.exit(f"{tool} not found (make setup)")
        compare(args, console)
        return
    wanted = set(args.only or ("native", "sdes", "sdes-noedge", "kms"))
    for tool in (KAMAILIO, SIPP):
        if not Path(tool).exists():
            sys.exit(
                f"{tool} not found (apt-get install kamailio kamailio-python3-modules sip-tester)"
            )
    results: dict[str, RunResult | None] = {}
    timing: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="secconf-kbench-") as tmp:
        workdir = Path(tmp)
        uas_port = free_port(socket.SOCK_DGRAM)
        uas = subprocess.Popen(
            [SIPP, "-sf", str(MIXER), "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
             "-mp", str(free_media_ports()), "-max_socket", "1024", "-buff_size", "4194304"],
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
