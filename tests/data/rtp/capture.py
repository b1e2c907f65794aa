"""Record the RTP and RTCP a real SIP UA sends: a one-shot UAS plus two UDP recorders.

Run from the repository root, e.g.::

    python tests/data/rtp/capture.py baresip OUTDIR
    python tests/data/rtp/capture.py sipp OUTDIR

The UAS answers the UA's INVITE with 200 OK whose SDP (RTP/AVP, PCMU) points to
a recorder port; RTCP goes to that port + 1 (RFC 3550 §11, no rtcp-mux).  Every
datagram is written unchanged to OUTDIR/<program>-<rtp|rtcp>-<n>.bin.  Not a
test: it documents how the files in this directory were made (PROVENANCE.toml).
"""

from __future__ import annotations

import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_udp_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((HOST, 0))
        port = rtp.getsockname()[1]
        if port % 2:
            rtp.close()
            continue
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no even/odd port pair")


def answer(invite: str, media_port: int, sip_port: int) -> str:
    headers = {}
    for line in invite.split("\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    sdp = (
        "v=0\r\no=rec 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: {headers['via']}\r\nFrom: {headers['from']}\r\n"
        f"To: {headers['to']};tag=rec1\r\nCall-ID: {headers['call-id']}\r\n"
        f"CSeq: {headers['cseq']}\r\nContact: <sip:rec@{HOST}:{sip_port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    )


def main(program: str, outdir: Path, seconds: float = 7.0) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind((HOST, 0))
    sip_port = sip.getsockname()[1]
    rtp, rtcp = free_udp_pair()
    media_port = rtp.getsockname()[1]
    with tempfile.TemporaryDirectory() as conf:
        if program == "baresip":
            Path(conf, "config").write_text(
                "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule ausine.so\n"
                "module aubridge.so\nmodule menu.so\nmodule account.so\n"
                "audio_source ausine,1000\naudio_player aubridge,x\n"
                "ausrc_srate 48000\nausrc_channels 2\nsip_listen 127.0.0.1:0\n"
                "rtcp_mux no\n"
            )
            Path(conf, "accounts").write_text("<sip:cap@127.0.0.1>;regint=0\n")
            cmd = [
                "baresip", "-f", conf, "-t", str(int(seconds)),
                "-e", f"/dial sip:rec@{HOST}:{sip_port}",
            ]  # fmt: skip
        else:
            # uac_pcap replays pcap/g711a.pcap and pcap/dtmf_2833_1.pcap relative to the cwd.
            Path(conf, "pcap").mkdir()
            for pcap in Path("/usr/share/sip-tester").glob("*.pcap"):
                Path(conf, "pcap", pcap.name).symlink_to(pcap)
            cmd = [
                "sipp", "-sn", "uac_pcap", "-m", "1", "-i", HOST, "-p", "0",
                "-mp", "0", f"{HOST}:{sip_port}",
                "-timeout", str(int(seconds + 10)), "-nostdin",
            ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=conf, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        counts = {"rtp": 0, "rtcp": 0}
        deadline = time.monotonic() + seconds + 3
        names = {sip: "sip", rtp: "rtp", rtcp: "rtcp"}
        peer_media: tuple[str, int] | None = None
        next_send = seq = 0
        while time.monotonic() < deadline:
            if peer_media is not None and time.monotonic() >= next_send:
                # Our own stream back (PCMU silence, SSRC 0x5EC0F000), so the UA's
                # SR carries a report block about it.  Built by hand, not by secconf.
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, 0x5EC0F000)
                rtp.sendto(header + b"\xff" * 160, peer_media)
                seq += 1
                next_send = time.monotonic() + 0.02
            ready, _, _ = select.select(list(names), [], [], 0.005)
            for sock in ready:
                name = names[sock]
                data, addr = sock.recvfrom(65535)
                if name == "sip":
                    text = data.decode("utf-8", "replace")
                    method = text.split(" ", 1)[0]
                    if method == "INVITE":
                        sip.sendto(answer(text, media_port, sip_port).encode(), addr)
                        port = re.search(r"\r\nm=audio (\d+) ", text)
                        if port and program == "baresip":
                            peer_media = (HOST, int(port.group(1)))
                    elif method == "BYE":
                        reply = re.sub(r"^BYE [^\r]*", "SIP/2.0 200 OK", text, count=1)
                        reply = re.sub(r"\r\n\r\n.*", "\r\n\r\n", reply, flags=re.S)
                        sip.sendto(reply.encode(), addr)
                    continue
                counts[name] += 1
                (outdir / f"{program}-{name}-{counts[name]:04d}.bin").write_bytes(data)
        proc.terminate()
        proc.wait(5)
    print(program, counts)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
