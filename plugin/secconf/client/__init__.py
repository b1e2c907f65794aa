"""The participant side: SIP user agent, key handling, SRTP media."""
