"""The Kamailio KEMI module: the conference focus's SIP policy inside Kamailio's workers.

``handler`` holds the object app_python3 calls (``mod_init`` returns it),
``adapter`` turns KSR calls into plain values and back, ``settings`` reads the
TOML configuration, ``edge_control`` talks to the media edge.  The policy
decisions themselves are in :mod:`secconf.core.focus` (pure).  See
docs/kamailio.md.
"""
