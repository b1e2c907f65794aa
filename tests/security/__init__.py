"""Attacks on the focus, the mixer, the KMS and the edge, against the real stack (issue 12)."""
