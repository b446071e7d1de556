#!/usr/bin/env bash
# Cold start of `make demo`, as a plant engineer meets it: a fresh clone, no .venv, no pip
# cache; time from `make demo` to the .venv being ready and to the first alarm line the demo
# prints; then the .venv's size and how many lines pip and setuptools printed meanwhile.
#
#   scripts/measure_cold_demo.sh [--keep] [DIR]     (DIR: where to clone; default a temp dir)
#
# The pip cache is bypassed with PIP_NO_CACHE_DIR=1 rather than cleared, so measuring does not
# empty the cache of anyone else on the machine. Run it under `nice` on a shared host and
# compare figures taken in the same session only.
set -euo pipefail
keep=0
if [ "${1:-}" = "--keep" ]; then keep=1; shift; fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$(mktemp -d)/edge-agent}"
timeout_s="${TIMEOUT_S:-900}"

git clone -q "$repo" "$dir"
cd "$dir"
export PIP_NO_CACHE_DIR=1
log="$dir/demo.log"
start=$(date +%s.%N)
setsid make demo >"$log" 2>&1 &
pid=$!
cleanup() { kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap cleanup EXIT

installed="" first_alarm=""
while :; do
    now=$(date +%s.%N)
    if [ -z "$installed" ] && [ -f .venv/.installed ]; then
        installed=$(echo "$now - $start" | bc)
    fi
    if grep -q '^ALARM ' "$log"; then
        first_alarm=$(echo "$now - $start" | bc)
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "make demo exited before the first alarm; log: $log" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    if [ "$(echo "$now - $start > $timeout_s" | bc)" = 1 ]; then
        echo "no alarm within ${timeout_s}s; log: $log" >&2
        exit 1
    fi
    sleep 0.2
done
cleanup
trap - EXIT

venv_mb=$(du -sm .venv | cut -f1)
before_banner=$(sed -n '/^edge-agent demo$/q;p' "$log" | grep -cv '^\s*$' || true)
printf 'commit        %s\n' "$(git rev-parse --short HEAD)"
printf 'venv ready    %.1f s\n' "$installed"
printf 'first alarm   %.1f s after `make demo`\n' "$first_alarm"
printf 'venv size     %s MB (du -sm .venv)\n' "$venv_mb"
printf 'packages      %s (pip list)\n' "$(.venv/bin/pip list --format=freeze 2>/dev/null | wc -l)"
printf 'install lines %s printed before the demo banner\n' "$before_banner"
if [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "kept $dir"; fi
