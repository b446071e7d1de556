# edge-agent container image.
#
#   docker build -t edge-agent .
#   docker run -d --name edge-agent \
#     -v /srv/edge-agent/agent.yaml:/etc/edge-agent/agent.yaml:ro \
#     -v edge-agent-state:/var/lib/edge-agent \
#     -p 127.0.0.1:8000:8000 edge-agent
#
# The pip commands here are mirrored by scripts/build_wheel_and_smoke.sh (which CI runs, since
# not every CI host can build images); tests/test_dockerfile.py keeps the two in step.

# ---------------------------------------------------------------- builder: source -> wheel
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (README.md is optional, hence the glob), plus the lock
# file the runtime stage installs against.
COPY pyproject.toml requirements.lock README.m[d] /src/
COPY edge_agent /src/edge_agent
RUN python -m pip wheel --no-deps --wheel-dir /dist /src

# ---------------------------------------------------------------- runtime: wheel only
FROM python:3.11-slim AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# A fixed, unprivileged uid/gid so volume ownership is predictable across image versions.
RUN groupadd --system --gid 10001 edge-agent \
 && useradd --system --uid 10001 --gid edge-agent --home-dir /var/lib/edge-agent \
        --no-create-home --shell /usr/sbin/nologin edge-agent \
 && install -d -o edge-agent -g edge-agent -m 0700 /var/lib/edge-agent \
 && install -d -m 0755 /etc/edge-agent

COPY --from=builder /dist /tmp/dist
COPY --from=builder /src/requirements.lock /tmp/dist/requirements.lock
# Optional features, as pip extras: s3 (model sync), isolation-forest (that detector), uvloop.
# The default image is the core runtime; e.g. --build-arg EXTRAS=s3,isolation-forest adds them.
# `edge-agent check-config` names the extra a config needs that the image lacks.
ARG EXTRAS=""
# The lock file as constraints: the image gets exactly the dependency versions CI tested.
RUN python -m pip install --constraint /tmp/dist/requirements.lock "$(echo /tmp/dist/*.whl)${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /tmp/dist

# State (models/, outbox.sqlite) survives container replacement only on a volume.
ENV EDGE_AGENT__STATE_DIR=/var/lib/edge-agent \
    NUMBA_CACHE_DIR=/var/lib/edge-agent/cache/numba \
    MPLCONFIGDIR=/var/lib/edge-agent/cache/matplotlib \
    EDGE_AGENT__HTTP__HOST=0.0.0.0
# EDGE_AGENT__HTTP__HOST=0.0.0.0 only inside the container: Docker's port mapping is the
# exposure boundary (publish it as -p 127.0.0.1:8000:8000 unless you mean otherwise).
VOLUME ["/var/lib/edge-agent"]
EXPOSE 8000
USER edge-agent:edge-agent
WORKDIR /var/lib/edge-agent

# /healthz with the stdlib (no curl in slim): healthy only on HTTP 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# The config is mounted read-only at /etc/edge-agent/agent.yaml; secrets are mounted files
# referenced by the *_file keys (e.g. Docker secrets under /run/secrets/).
ENTRYPOINT ["edge-agent"]
CMD ["run", "-c", "/etc/edge-agent/agent.yaml"]
