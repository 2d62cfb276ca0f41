"""What is read from a host: facts the built-in ones do not cover (host.py), and every fact
deploy.py reads asked in one round trip (planned.py lists them, prefetch.py answers them)."""
