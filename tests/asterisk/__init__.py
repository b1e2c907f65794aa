"""Tests against a real Asterisk 22 (tests/fixtures/asterisk_server.py)."""
