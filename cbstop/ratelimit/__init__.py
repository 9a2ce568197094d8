"""Rate limits (CONTRACT 3.3): a quota per owner per operation, a budget of failed
authentications per client address, GCRA over an in-process or a Redis store.

`policy.py` parses `CBSTOP_RATE_LIMIT`-style limits and writes the IETF fields; `gcra.py` is
the algorithm; `stores.py` the store interface and the in-process store; `redis_store.py`
the shared one (one Lua script per request); `limiter.py` what the edge calls.
"""
