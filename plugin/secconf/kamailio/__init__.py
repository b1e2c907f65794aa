"""The Kamailio KEMI module: the conference focus's SIP policy inside Kamailio's workers.

``handler`` holds the object app_python3 calls (``mod_init`` returns it),
``adapter`` turns KSR calls into plain values and back, ``peer_cache`` keeps a fresh
dialog's next hops in Kamailio's shared memory.  The conference logic is
:mod:`secconf.focus`; the policy decisions themselves are in :mod:`secconf.core.focus`
(pure).  See docs/kamailio.md.
"""
