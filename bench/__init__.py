"""`make bench`: the edge-agent performance report (bench/report.md, bench/report.json).

Run ``python -m bench.run --help``. Everything runs against a real mosquitto on loopback,
started by the bench on a free port; every process the bench starts is stopped on exit.
"""
