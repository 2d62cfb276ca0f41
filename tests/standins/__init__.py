"""Tests of the stand-in images (tools/standins)."""
