"""KSR (Kamailio's KEMI API, app_python3 on 5.6) to plain Python values and back.

The only module of secconf that calls ``KSR``.  It reads a SIP message into a
:class:`~secconf.focus.messages.RequestView` / ``ReplyView`` and applies the decisions
of :mod:`secconf.focus.service` (``Reply``, ``Relay``, a new body).  The KSR object is passed in, so the fast unit tests drive this module
with a fake (tests/kamailio/fake_ksr.py) and only the end-to-end tests need
Kamailio.

What works on Kamailio 5.6 (see docs/kamailio.md, "app_python3 quirks"):

* pseudo-variables by ``KSR.pv.get("$...")``: ``None`` when unset (a missing
  header, no body), otherwise ``str`` (or ``int`` for numeric ones);
* a new body with ``KSR.textops.set_body(body, content_type)`` in request and
  reply routes; it is applied as a lump when the message is forwarded, so
  ``$rb`` still shows the old body afterwards;
* headers for our own replies with ``KSR.hdr.append_to_reply`` then
  ``KSR.sl.send_reply`` (stateful if a transaction exists);
* per-transaction state in an AVP (``$avp(secconf)``): set in the request
  route, read back in the ``t_on_reply`` / ``t_on_failure`` routes of the same
  transaction;
* per-dialog state in our Record-Route: ``KSR.rr.add_rr_param(";sc-conf=<id>")``
  on the initial INVITE; every in-dialog request (from either side) carries
  it back in its Route, read after ``loose_route`` from ``$route_uri``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from secconf.core.gate import Flow, sender_fingerprint
from secconf.focus.events.notifier import NotifyRequest
from secconf.focus.events.subscriptions import Arrival
from secconf.focus.messages import Relay, Reply, ReplyView, RequestView

__all__ = [
    "AVP",
    "RR_MAC_PARAM",
    "RR_PARAM",
    "DialogRequestView",
    "KsrAdapter",
    "contact_uri",
]

#: The AVP that carries our per-transaction state (JSON text, no key material).
AVP = "$avp(secconf)"

#: The Record-Route parameter naming a dialog's conference (public: it is in the conference URI).
RR_PARAM: Final = "sc-conf"
#: Its MAC under the focus's secret (conference, Call-ID, caller tag: secconf.core.gate).
RR_MAC_PARAM: Final = "sc-mac"
_RR_PARAM_RE: Final = re.compile(r";\s*" + RR_PARAM + r"=([0-9a-z]{1,64})(?=[;>?\s]|$)", re.I)
_RR_MAC_RE: Final = re.compile(r";\s*" + RR_MAC_PARAM + r"=([0-9a-f]{1,64})(?=[;>?\s]|$)", re.I)
_URI_IN_ANGLES: Final = re.compile(r"<([^<>]*)>")


@dataclass(frozen=True, slots=True)
class DialogRequestView:
    """What the gate reads of an in-dialog request other than INVITE/REFER (a few pvs)."""

    call_id: str
    from_tag: str
    to_tag: str | None
    flow: Flow
    content_type: str | None
    content_length: int


#: What :meth:`KsrAdapter.bodiless_ack` reads: flow, tags, Content-Length, then the Call-ID.
_ACK_VIEW = "$_s($pr $si $sp $ft $tt $cl $ci)"


def _split_view(text: str | None) -> list[str] | None:
    """:data:`_ACK_VIEW`'s seven fields, or ``None`` when they do not split cleanly.

    Content-Length is a number or ``<null>`` (no header), the port a number, the Call-ID
    not empty; a tag with a space in it shifts the fields and fails these checks.
    """
    if text is None:
        return None
    fields = text.split(" ", 6)
    if len(fields) != 7:
        return None
    _, _, port, _, _, length, call_id = fields
    if not port.isdigit() or not call_id or not (length.isdigit() or length == "<null>"):
        return None
    return fields


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def contact_uri(header: str | None) -> str:
    """The URI of a Contact header's first value (``<...>`` stripped, no header parameters)."""
    if not header:
        return ""
    first = header.split(",", 1)[0] if "<" not in header else header
    match = _URI_IN_ANGLES.search(first)
    if match is not None:
        return match.group(1).strip()
    return first.split(";", 1)[0].strip()


class KsrAdapter:
    """Thin wrapper over the ``KSR`` module of one Kamailio worker."""

    def __init__(self, ksr: Any) -> None:
        self.ksr = ksr

    # -- reading ------------------------------------------------------------------

    def pv(self, name: str) -> str | None:
        return _text(self.ksr.pv.get(name))

    def header(self, name: str) -> str | None:
        return self.pv(f"$hdr({name})")

    def request(self, header_names: Sequence[str] = ()) -> RequestView:
        body_text = self.pv("$rb") or ""
        length_text = self.pv("$cl")
        try:
            content_length = int(length_text) if length_text is not None else len(body_text)
        except ValueError:
            content_length = len(body_text)
        return RequestView(
            method=self.pv("$rm") or "",
            ruri=self.pv("$ru") or "",
            ruri_user=self.pv("$rU"),
            call_id=self.pv("$ci") or "",
            source_ip=self.pv("$si") or "",
            from_uri=self.pv("$fu") or "",
            from_tag=self.pv("$ft") or "",
            to_tag=self.pv("$tt") or None,
            content_type=self.pv("$cT"),
            body=body_text.encode("utf-8", "surrogateescape"),
            content_length=content_length,
            headers={name: self.header(name) for name in header_names},
            source_port=self._port(self.pv("$sp")),
            transport=(self.pv("$pr") or "").lower(),
            contact=contact_uri(self.header("Contact")),
        )

    def arrival(self) -> Arrival:
        """Our socket the request came in on (``$pr:$Ri:$Rp``) and our local To tag (``$ltt(x)``: the transaction's, else sl's)."""
        socket = (
            f"{(self.pv('$pr') or 'udp').lower()}:{self.pv('$Ri') or ''}:{self.pv('$Rp') or ''}"
        )
        return Arrival(socket=socket, local_tag=self.pv("$ltt(x)") or "")

    def send_request(self, request: NotifyRequest) -> bool:
        """``tm.t_uac_send``: a request of ours in a dialog, over the subscriber's flow.

        tm takes the dialog's Call-ID, tags and CSeq from *request*'s headers and adds Via,
        Max-Forwards and Content-Length (checked on Kamailio 5.6.3, docs/event-package.md).
        Text bodies only: a KEMI string is a C string (see :meth:`send_raw`).
        """
        result = self.ksr.tm.t_uac_send(
            "NOTIFY", request.ruri, request.next_hop, request.socket, request.headers,
            request.body.decode("utf-8"),
        )  # fmt: skip
        return bool(result is not None and int(result) > 0)

    def send_raw(self, destination: str, message: bytes) -> bool:
        """``corex.send_data``: a whole SIP message to *destination*, any bytes in it.

        app_python3 hands KEMI functions C strings (a NUL ends one, non-UTF-8 bytes do not
        convert), so a binary body (CMS) cannot pass ``t_uac_send``.  The message goes
        base64 into a ``$var`` and the native ``send_data`` decodes it inside Kamailio
        (``s.decode.base64``); each argument is a whole ``$var``, so nothing the subscriber
        wrote is parsed as a format.  Stateless: over TLS/TCP (reliable) nothing is lost to
        a missing retransmission; over UDP a lost NOTIFY ends the subscription at Timer F.
        """
        self.ksr.pv.sets("$var(sc_raw_dst)", destination)
        self.ksr.pv.sets("$var(sc_raw)", base64.b64encode(message).decode("ascii"))
        result = self.ksr.x.modf("send_data", "$var(sc_raw_dst)", "$(var(sc_raw){s.decode.base64})")
        return bool(result is not None and int(result) > 0)

    def bodiless_ack(self) -> tuple[str, str] | None:
        """An ACK's Call-ID and sender fingerprint in one read, or ``None`` (read it in full).

        One ``$_s`` format (pv module) instead of seven pseudo-variables: the ACK of every
        answered call passes here. The Call-ID comes last, so whatever it holds stays in it;
        an ACK that does not split into exactly these fields, or has a body, gets ``None``
        and goes through :meth:`dialog_request` and the whole gate.
        """
        fields = _split_view(_text(self.ksr.pv.get(_ACK_VIEW)))
        if fields is None:
            return None
        transport, address, port, from_tag, to_tag, length, call_id = fields
        if length != "0" or "<null>" in (from_tag, to_tag):
            return None
        flow = Flow.of(transport, address, int(port))
        return call_id, sender_fingerprint(flow, from_tag, to_tag)

    def relay_to(self, uri: str, destination: str) -> bool:
        """Forward to *uri* via *destination* (a recorded next hop), nothing else changed."""
        self._route_to(uri, destination)
        if self.ksr.tm.t_relay() < 0:
            self.ksr.sl.sl_reply_error()
            return False
        return True

    def _route_to(self, uri: str, destination: str) -> None:
        self.ksr.pv.sets("$ru", uri)
        self.ksr.pv.sets("$du", destination)

    def dialog_request(self) -> DialogRequestView:
        """The few values the in-dialog gate needs (no headers, no body read).

        One ``$_s`` read for the common case (the flow, tags, Content-Length and Call-ID of
        :meth:`bodiless_ack`); the Content-Type only when there is a body. Anything that
        does not split cleanly is read pseudo-variable by pseudo-variable.
        """
        fields = _split_view(_text(self.ksr.pv.get(_ACK_VIEW)))
        if fields is not None and fields[5] != "<null>":
            transport, address, port, from_tag, to_tag, length, call_id = fields
            content_length = int(length)
            return DialogRequestView(
                call_id=call_id,
                from_tag=from_tag,
                to_tag=None if to_tag == "<null>" else to_tag,
                flow=Flow.of(transport, address, int(port)),
                content_type=self.pv("$cT") if content_length else None,
                content_length=content_length,
            )
        return DialogRequestView(
            call_id=self.pv("$ci") or "",
            from_tag=self.pv("$ft") or "",
            to_tag=self.pv("$tt") or None,
            flow=Flow.of(self.pv("$pr") or "udp", self.pv("$si") or "", self._port(self.pv("$sp"))),
            content_type=self.pv("$cT"),
            # RFC 3261 §20.14: over UDP Content-Length may be left out and the body is the
            # rest of the datagram; then it is measured, never taken as 0.
            content_length=self._body_length(),
        )

    def _body_length(self) -> int:
        length = self.pv("$cl")
        if length is None:
            return len(self.pv("$rb") or "")
        return self._port(length)

    @staticmethod
    def _port(text: str | None) -> int:
        try:
            return int(text or 0)
        except ValueError:
            return 0

    def reply_view(self) -> ReplyView:
        status_text = self.pv("$rs") or "0"
        return ReplyView(
            status=int(status_text),
            reason=self.pv("$rr") or "",
            call_id=self.pv("$ci") or "",
            method=self.pv("$rm") or "",
            content_type=self.pv("$cT"),
            body=(self.pv("$rb") or "").encode("utf-8", "surrogateescape"),
            to_tag=self.pv("$tt") or "",
            contact=contact_uri(self.header("Contact")),
            flow=Flow.of(self.pv("$pr") or "udp", self.pv("$si") or "", self._port(self.pv("$sp"))),
        )

    def request_body(self) -> bytes:
        """The body of the transaction's request, in a tm reply route (``$T_req``, module tmx)."""
        return (self.pv("$T_req($rb)") or "").encode("utf-8", "surrogateescape")

    def route_conference(self) -> tuple[str | None, str | None]:
        """The conference and MAC of our Route's ``sc-conf``/``sc-mac`` (after ``loose_route``).

        ``(None, None)`` when the first Route (ours, for a request routed to us) has no
        conference: not a conference dialog of this focus.  The MAC is checked by the gate.
        """
        route = self.pv("$route_uri")
        if not route:
            return None, None
        match = _RR_PARAM_RE.search(route)
        if match is None:
            return None, None
        mac = _RR_MAC_RE.search(route)
        return match.group(1).lower(), (mac.group(1).lower() if mac else None)

    def reply_code(self) -> int:
        """The status of the winning reply in a tm failure route (0 if unknown)."""
        try:
            return int(self.pv("$T_reply_code") or 0)
        except ValueError:
            return 0

    def state(self) -> str | None:
        return self.pv(AVP)

    # -- acting ---------------------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        for name, value in reply.headers:
            self.ksr.hdr.append_to_reply(f"{name}: {value}\r\n")
        if reply.body:
            self.ksr.textops.set_reply_body(
                reply.body.decode("utf-8", "surrogateescape"), reply.content_type
            )
        self.ksr.sl.send_reply(reply.status, reply.reason)

    def set_body(self, body: bytes, content_type: str = "application/sdp") -> None:
        self.ksr.textops.set_body(body.decode("utf-8", "surrogateescape"), content_type)

    def relay(self, relay: Relay) -> bool:
        """Forward statefully; False (after answering 500) if tm could not."""
        for name in relay.remove_headers:
            self.ksr.hdr.remove(name)
        for name, value in relay.add_headers:
            self.ksr.hdr.append(f"{name}: {value}\r\n")
        if relay.record_route:
            if relay.conference_id is not None:
                mac = f";{RR_MAC_PARAM}={relay.route_mac}" if relay.route_mac else ""
                self.ksr.rr.add_rr_param(f";{RR_PARAM}={relay.conference_id}{mac}")
            self.ksr.rr.record_route()
        if relay.uri is not None:
            self.ksr.pv.sets("$ru", relay.uri)
        if relay.next_hop is not None:
            # The recorded peer: its Contact as Request-URI, its flow (for a TLS/TCP phone the
            # connection it opened) as the destination; nothing the sender wrote decides.
            self._route_to(*relay.next_hop)
        if relay.body is not None:
            self.set_body(relay.body, relay.content_type)
        if relay.state is not None:
            self.ksr.pv.sets(AVP, relay.state)
        if relay.on_reply:
            self.ksr.tm.t_on_reply(relay.on_reply)
        if relay.on_failure:
            self.ksr.tm.t_on_failure(relay.on_failure)
        if self.ksr.tm.t_relay() < 0:
            self.ksr.sl.sl_reply_error()
            return False
        return True

    # -- stream connections (TLS/TCP phones, docs/kamailio.md "SIP over TLS") ----------

    def on_stream(self) -> bool:
        """The message came over TLS or TCP (``$pr``): its peer is reached over that connection."""
        return (self.pv("$pr") or "").lower() in ("tls", "tcp")

    def alias_contact(self) -> None:
        """``nathelper.add_contact_alias``: ``;alias=<source ip~port~transport>`` in the Contact.

        Whoever sends in-dialog requests to that Contact (Asterisk, via us) then reaches
        the connection this message came on (:meth:`follow_alias`), not a new one.
        """
        if self.ksr.nathelper.add_contact_alias() < 0:
            self.log("warn", "secconf: could not add a contact alias")

    def follow_alias(self) -> None:
        """``nathelper.handle_ruri_alias``: a Request-URI with ``;alias=`` goes to that connection."""
        if ";alias=" in (self.pv("$ru") or ""):
            self.ksr.nathelper.handle_ruri_alias()

    def destination_secure(self) -> bool:
        """The request leaves over TLS: its destination (``$du``, else ``$ru``) says so."""
        target = (self.pv("$du") or self.pv("$ru") or "").lower()
        return target.startswith("sips:") or ";transport=tls" in target

    def fix_registration(self) -> None:
        """``nathelper.fix_nated_register``: the contact is reached where the REGISTER came from."""
        self.ksr.nathelper.fix_nated_register()

    # -- location service (registrar/usrloc, docs/kamailio.md "REGISTER") --------------

    def save_registration(self, table: str = "location") -> bool:
        """``registrar.save``: store the REGISTER's contacts and answer it (RFC 3261 §10.3)."""
        return bool(self.ksr.registrar.save(table, 0) > 0)

    def set_ruri(self, uri: str) -> None:
        """The Request-URI the request is relayed to (``$ru``)."""
        self.ksr.pv.sets("$ru", uri)

    def lookup(self, target: str, table: str = "location") -> int:
        """``registrar.lookup`` of *target*: the Request-URI becomes its contact.

        Returns registrar's code: 1 found (``$ru`` rewritten), -1 no contact
        (unknown or expired), -2 found but the method is not supported, -3
        internal error.
        """
        self.ksr.pv.sets("$ru", target)
        return int(self.ksr.registrar.lookup(table))

    def log(self, level: str, message: str) -> None:
        """Kamailio's log; messages from secconf never carry key material."""
        text = message.replace("\n", " ") + "\n"
        getattr(self.ksr, level if level in ("info", "warn", "err", "dbg") else "info")(text)
