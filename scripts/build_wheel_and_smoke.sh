#!/usr/bin/env bash
# Build the edge-agent wheel exactly as the Dockerfile's builder stage does, install it into a
# fresh virtualenv exactly as the runtime stage does, and smoke-test the installed console
# script. The Docker image cannot be built in every environment (no engine in CI sandboxes);
# this script is the part of it that can, with the same inputs and the same pip commands.
# tests/test_dockerfile.py checks that the pip commands below and in the Dockerfile agree.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/build_wheel_and_smoke.sh [--out DIR] [--python PY] [--extras LIST] [--no-smoke]

  --out DIR       where the wheel goes (default: <repo>/dist)
  --python PY     interpreter to build and smoke-test with, >= 3.11 (default: python3)
  --extras LIST   pip extras to install with the wheel, as the Dockerfile's EXTRAS build
                  argument (default: none, the core runtime, as the image's default)
  --no-smoke      only build the wheel
  -h, --help      show this help

Build inputs are the files the Dockerfile COPYs (pyproject.toml, README.md if present,
edge_agent/; requirements.lock constrains the install), copied to a temporary source tree, so the wheel contains what the image would
and the repository gets no build/ or *.egg-info droppings. The smoke test installs the wheel
with its dependencies (versions pinned by requirements.lock) into a new venv and runs, from outside the
repository (so nothing is imported from the source tree):
  edge-agent --help
  edge-agent check-config config/agent.example.yaml
  python -c "import edge_agent.notify, edge_agent.agent, edge_agent.http.server"
and, with no --extras, that check-config names the extras a config needs (isolation-forest,
s3) and that the demo names its own.
EOF
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/dist"
python=python3
smoke=1
extras=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --out) [ -n "${2:-}" ] || { echo "--out needs a value" >&2; exit 2; }; out="$2"; shift 2 ;;
        --python) [ -n "${2:-}" ] || { echo "--python needs a value" >&2; exit 2; }; python="$2"; shift 2 ;;
        --extras) extras="${2-}"; shift 2 ;;
        --no-smoke) smoke=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "$python is older than 3.11" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- same inputs as the Dockerfile's COPY lines
mkdir -p "$work/src"
cp "$repo/pyproject.toml" "$work/src/"
[ -f "$repo/README.md" ] && cp "$repo/README.md" "$work/src/"
cp -r "$repo/edge_agent" "$work/src/edge_agent"
find "$work/src" -name '__pycache__' -type d -prune -exec rm -rf {} +

# --- builder stage (keep identical to the Dockerfile)
mkdir -p "$work/dist"
"$python" -m pip wheel --no-deps --wheel-dir "$work/dist" "$work/src"   # docker:builder
wheels=("$work"/dist/edge_agent-*.whl)
[ "${#wheels[@]}" -eq 1 ] && [ -f "${wheels[0]}" ] || { echo "expected exactly one edge_agent wheel" >&2; exit 1; }
mkdir -p "$out"
cp "${wheels[0]}" "$out/"
wheel="$out/$(basename "${wheels[0]}")"
echo "built $wheel"

[ "$smoke" = 1 ] || exit 0

# --- runtime stage (keep identical to the Dockerfile)
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --upgrade pip >/dev/null
"$work/venv/bin/python" -m pip install --constraint "$repo/requirements.lock" "$wheel${extras:+[$extras]}"   # docker:runtime

example="$repo/config/agent.example.yaml"
[ -f "$example" ] || { echo "missing $example" >&2; exit 1; }
cd "$work"   # not the repository: prove the installed wheel is self-sufficient
export MPLCONFIGDIR="$work/mpl" NUMBA_CACHE_DIR="$work/numba"
"$work/venv/bin/edge-agent" --help >/dev/null
"$work/venv/bin/edge-agent" check-config "$example"
"$work/venv/bin/python" -c "import edge_agent.notify, edge_agent.agent, edge_agent.http.server"
if [ -z "$extras" ]; then
    # The core alone: a config that needs an extra is refused before it runs, naming the extra,
    # and the demo says what its embedded broker needs.
    printf 'state_dir: %s\ndetector: {name: isolation_forest}\ns3: {enabled: true, bucket: b}\n' "$work/state" >"$work/extras.yaml"
    if out="$("$work/venv/bin/edge-agent" check-config "$work/extras.yaml" 2>&1)"; then
        echo "check-config accepted a config that needs extras the core lacks" >&2; exit 1
    fi
    for extra in isolation-forest s3; do
        grep -qF "edge-agent[$extra]" <<<"$out" || { echo "check-config did not name the $extra extra:" >&2; echo "$out" >&2; exit 1; }
    done
    if out="$("$work/venv/bin/edge-agent" demo 2>&1)"; then
        echo "demo ran without its embedded broker's package" >&2; exit 1
    fi
    grep -qF "edge-agent[demo]" <<<"$out" || { echo "demo did not name the demo extra:" >&2; echo "$out" >&2; exit 1; }
    echo "core install: check-config and demo name the extras they need"
fi
echo "smoke OK: $wheel${extras:+ [$extras]} ($(du -sm "$work/venv" | cut -f1) MB venv)"
