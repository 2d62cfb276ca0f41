"""Unit tier: config validation, rendered files and per-step plans (facts in, commands out).

No target host, no network, no Docker: the whole tier runs in seconds.
"""
