"""SRTP media: the participant endpoint (secconf.client.media) on loopback."""
