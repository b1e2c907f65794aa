"""The secconf KMS: MIKEY-TICKET Request and Resolve over HTTP, state in Redis.

``secconf kms serve`` runs it; ``secconf kms user ...`` provisions identities.
See docs/kms.md for the HTTP binding and the error mapping.
"""
