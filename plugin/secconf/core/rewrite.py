"""Putting the conference's group key into an SDP body (SDES mode).

What the focus side of the Kamailio module does to a description passing
through: every RTP stream gets exactly one ``a=crypto`` line carrying the
group key of the current epoch, under the tag and suite of the first
acceptable line the phone offered (RFC 4568 §7.1.2), and optionally a new
media address (the media edge).  Every other byte stays as it was.

Refusals (all 488, nothing changed):

* a live RTP stream on a plain profile (RTP/AVP, RTP/AVPF): R3 forbids a
  clear leg, so no downgrade is offered or accepted;
* a secure stream without a crypto line we can take: none in the group key's
  suite, or only lines with session parameters (RFC 4568 §6.3) that would
  weaken protection or that the media edge cannot honour (see
  :data:`REFUSED_SESSION_PARAMS`).

Non-RTP streams (BFCP, T.38, ...) and rejected streams (port 0) are left
untouched here; floor control has its own protection (R8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InsecureMedia, InvalidCryptoAttribute, NoUsableKey
from .keys import GroupKey
from .sdes import CryptoAttribute
from .sdp import MediaSection, SessionDescription

__all__ = [
    "REFUSED_SESSION_PARAMS",
    "GroupKeyRewrite",
    "KeyedStream",
    "apply_group_key",
    "choose_offered_crypto",
]

#: Session parameters that make an offered line unacceptable.  The UNENCRYPTED
#: and UNAUTHENTICATED ones would leave a leg partly clear (R3); KDR asks for
#: periodic re-derivation, which libsrtp does not implement; FEC_KEY implies FEC
#: to a separate address, which the media edge does not run.  WSH and FEC_ORDER
#: are declarative and ``-`` extensions may be ignored (RFC 4568 §6.3.7).
REFUSED_SESSION_PARAMS = frozenset(
    {"KDR", "UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP", "FEC_KEY"}
)


@dataclass(frozen=True, slots=True)
class KeyedStream:
    """What happened to one media section."""

    index: int
    media: str
    offered_lines: int
    chosen_tag: int


@dataclass(frozen=True, slots=True)
class GroupKeyRewrite:
    """A rewritten copy of the description and what was done to it."""

    description: SessionDescription
    streams: tuple[KeyedStream, ...]


def _is_rtp(section: MediaSection) -> bool:
    return section.is_rtp


def choose_offered_crypto(section: MediaSection, group_key: GroupKey) -> CryptoAttribute:
    """The first offered crypto attribute the group key can answer (RFC 4568 §7.1.2).

    Invalid or unsupported lines are skipped, as the answerer "MUST" ignore
    what it does not understand and pick among the rest; if none remains the
    stream is refused with 488.
    """
    problems: list[str] = []
    for value in section.attributes("crypto"):
        try:
            offered = CryptoAttribute.parse(value or "")
        except InvalidCryptoAttribute as exc:
            problems.append(exc.message)
            continue
        if offered.suite != group_key.suite:
            problems.append(
                f"tag {offered.tag}: suite {offered.suite.name} is not the conference's"
            )
            continue
        refused = [p.name for p in offered.session_params if p.name in REFUSED_SESSION_PARAMS]
        if refused:
            names = ", ".join(refused)
            problems.append(f"tag {offered.tag}: session parameters not supported ({names})")
            continue
        return offered
    detail = "; ".join(problems) if problems else "no a=crypto line"
    raise NoUsableKey(
        f"{section.media} stream offers no usable {group_key.suite.name} key ({detail})"
    )


def apply_group_key(
    description: SessionDescription,
    group_key: GroupKey,
    *,
    media_address: str | None = None,
    media_ports: Sequence[int] | None = None,
) -> GroupKeyRewrite:
    """Return a copy of *description* keyed with *group_key*.

    *media_address* (IPv4) and *media_ports* (one per rewritten RTP stream, in
    order) point the streams at the media edge when given.  The input is not
    modified; on refusal nothing is returned at all.
    """
    rewritten = description.copy()
    live_rtp = [
        (index, section)
        for index, section in enumerate(rewritten.media)
        if _is_rtp(section) and section.port != 0
    ]
    if media_ports is not None and len(media_ports) != len(live_rtp):
        raise ValueError(f"{len(live_rtp)} RTP streams but {len(media_ports)} ports given")
    streams: list[KeyedStream] = []
    for position, (index, section) in enumerate(live_rtp):
        if not section.is_secure_rtp:
            raise InsecureMedia(
                f"{section.media} stream {index} uses {section.proto}: "
                "a secure conference takes SRTP only"
            )
        offered = choose_offered_crypto(section, group_key)
        answer = CryptoAttribute(offered.tag, group_key.suite, (group_key.key_param,))
        offered_lines = len(section.attributes("crypto"))
        section.replace_attributes("crypto", [str(answer)])
        if media_address is not None:
            section.set_connection(media_address)
        if media_ports is not None:
            section.set_port(media_ports[position])
        streams.append(KeyedStream(index, section.media, offered_lines, offered.tag))
    return GroupKeyRewrite(rewritten, tuple(streams))
