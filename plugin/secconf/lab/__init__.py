"""The lab: what runs secconf on one machine for ``make demo``, the tests and the benchmarks.

- :mod:`~secconf.lab.services`: throw-away Redis, KMS, edge, Kamailio and Asterisk processes
  on free loopback ports (the launchers, one module per program);
- :mod:`~secconf.lab.phones`: linphonec and baresip driven headless (one module per program);
- :mod:`~secconf.lab.tlsca`: a throwaway CA for SIP over TLS (``secconf tls init``);
- :mod:`~secconf.lab.demo_story` (``make demo``): its cast and services
  (:mod:`~secconf.lab.demo_services`), its acts (:mod:`~secconf.lab.demo_scenes`), its
  narrator (:mod:`~secconf.lab.demo_narrator`) and :mod:`~secconf.lab.timeline` (its SVG);
- :mod:`~secconf.lab.demo` (``secconf demo --captures``) and :mod:`~secconf.lab.sdp_view`
  (``secconf sdp inspect``): the SDP views.

The product (core, store, kamailio, asterisk, media, kms, client, httpguard) never imports
this package; the command (:mod:`secconf.cli`), the tests and the benchmarks do
(``make structure`` checks it).
"""
