"""Real SRTP phones driven headless: linphonec and baresip (tests and ``make demo``).

A :class:`~.linphone.LinphonePhone` or :class:`~.baresip.BaresipPhone` writes a private config
directory, starts the program and drives it: dial, answer (auto), hang up,
register, and read what it heard.  Both are configured alike: SIP over UDP or
TLS on free loopback ports, SDES SRTP mandatory (``AES_CM_128_HMAC_SHA1_80``),
PCMU only, no video, no ICE/STUN/TURN/DTLS/ZRTP, auto-answer, optional digest
credentials (answered to a proxy's 407 or a registrar's 401) and an optional
registration with a registrar (so a focus can call the phone back).  Audio:
no sound card.  Each phone can send a known tone (a WAV file made with
:func:`~.audio.write_tone_wav`) and records what it decodes to a WAV file
(:meth:`~.phone.Phone.heard`).

- :mod:`.phone`: what both drivers share (:class:`~.phone.Phone`, the child process whose
  output lines are waited on, :class:`~.phone.PhoneError`);
- :mod:`.linphone`: linphonec 5.1.65, driven on stdin;
- :mod:`.baresip`: baresip 1.0.0, driven over its ``ctrl_tcp`` socket;
- :mod:`.ports`: free loopback ports as the programs bind them;
- :mod:`.audio`: the WAV files a phone sends and records.

TLS (``transport="tls"``): the phone trusts *ca_file* for the server's
certificate.  linphonec verifies it (``root_ca``, ``verify_server_certs``,
``verify_server_cn``); **baresip 1.0.0 loads ``sip_cafile`` but does not
verify the server** (measured: tests/kamailio/test_tls.py).  *certificate*
(a PEM certificate chain and its key) is what the phone presents on its own
TLS listener, where Kamailio connects for requests towards the phone's
Contact.

Every process runs under ``setpriv --pdeathsig KILL`` (it dies with its
parent) and ``stdbuf -oL`` (its output arrives line by line, also kept in
``output.log`` in its directory).  Every wait has a timeout and raises
:class:`~.phone.PhoneError` with the program's log tail.
"""
