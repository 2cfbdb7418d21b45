"""The hh.ru API: typed records, the client, the API emulator and its synthetic market.

``records`` parses API items into typed records; ``client`` is the real API client (rate limit,
retries, the 2000-result depth cap); ``market`` is a deterministic synthetic market (clearly
tagged SYNTHETIC) and ``emulator`` serves it with the real API's rules, over HTTP or in process.

May import: :mod:`hhpulse.config` only. Nothing here knows about the store.
"""
