"""The agent's HTTP port: health, Prometheus metrics, series JSON, plots, a status page and the
fit/predict API of the FastAPI service this agent grew from.

One module per concept; every handler reads the live ``Agent`` it is given by
``server.create_app``. Nothing here touches the ingest hot path: counters are read at request
time, plots render in worker processes, and the JSON API runs fits through ``operations.fit``.
"""
