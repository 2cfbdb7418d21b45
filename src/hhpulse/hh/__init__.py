"""hh.ru: typed records, the API client, the emulator and its synthetic market, and sources."""
