#!/usr/bin/env bash
# Re-resolve the two lock files from pyproject.toml, keeping every version already pinned
# unless pyproject.toml no longer allows it:
#   requirements.lock      the runtime: the core and every runtime extra (s3, isolation-forest,
#                          demo, uvloop). `make install`, the Dockerfile and
#                          scripts/build_wheel_and_smoke.sh install with it as constraints, so a
#                          slim install gets the same versions as a full one.
#   requirements-dev.lock  what `make test`, `make lint`, `make bench` and `make native` add on top.
# To move a pin, edit it in the lock (or delete the line) and run this again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
cat "$repo/requirements.lock" "$repo/requirements-dev.lock" 2>/dev/null | grep -v '^#' >"$work/pins" || true
resolve() {  # extras -> report.json
    "$work/venv/bin/python" -m pip install --quiet --dry-run --ignore-installed \
        --constraint "$work/pins" --report "$work/$2" -e "$repo[$1]"
}
resolve all runtime.json
resolve all,test,bench,native dev.json
"$work/venv/bin/python" - "$work" "$repo" <<'PY'
import json, sys
from pathlib import Path
work, repo = Path(sys.argv[1]), Path(sys.argv[2])
def pins(name):
    report = json.loads((work / name).read_text())
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"] if i["metadata"]["name"] != "edge-agent"}
runtime, dev = pins("runtime.json"), pins("dev.json")
dev = {n: v for n, v in dev.items() if n not in runtime}
for fname, got, what in (("requirements.lock", runtime, "runtime: the core and every extra (scripts/update_locks.sh)"),
                         ("requirements-dev.lock", dev, "tests, lint and bench, on top of requirements.lock (scripts/update_locks.sh)")):
    lines = [f"# {what}\n"] + [f"{n}=={got[n]}\n" for n in sorted(got, key=str.lower)]
    (repo / fname).write_text("".join(lines))
    print(f"{fname}: {len(got)} pins")
PY
