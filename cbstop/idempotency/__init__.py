"""Idempotency keys (CONTRACT 3.1): a retried write gets the first one's answer, never a
second write.

- `keys`: the header's value, the request's fingerprint, and `Keyed` (one request's key,
  owner, fingerprint and clock).
- `store`: the stored answers — recall, remember (in the write's own transaction or
  statement), retries while a duplicate is in flight, and the background purge.
"""
