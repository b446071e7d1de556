"""Offline evaluation: the NAB scorer and the ``edge-agent evaluate`` command."""
