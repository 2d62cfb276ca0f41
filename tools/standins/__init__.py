"""Locally built stand-ins for the official python, postgres and minio images.

There is no container registry on the test machines, so the images the deploy
pulls (``python:3.12-slim``, ``postgres:17``, ``minio/minio``) are replaced by
images built here from Debian packages that honour the same contract.  See
README.md beside this file.
"""
