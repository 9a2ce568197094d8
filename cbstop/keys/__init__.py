"""Key management for operators (`cbstop keys ...`); authentication lives in `cbstop.auth`."""
