"""secconf: secure ad-hoc SIP conferencing (3GPP TR 33.829) for Kamailio and Asterisk."""

__version__ = "0.1.0"
