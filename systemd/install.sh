#!/usr/bin/env bash
# Install or upgrade edge-agent on a gateway as a systemd service. Idempotent: run it again
# with a newer wheel to upgrade; an existing /etc/edge-agent/agent.yaml is never overwritten.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: systemd/install.sh [options]

Installs edge-agent as a systemd service:
  1. a virtualenv at PREFIX/venv (created if absent), with the wheel installed into it
  2. PREFIX/docs/operations.md
  3. UNIT_DIR/edge-agent.service (ExecStart pointing at PREFIX/venv/bin/edge-agent)
  4. CONFIG_DIR/agent.yaml from config/agent.example.yaml, only if absent
  5. CREDSTORE (mode 0700) for the secrets named in the unit's LoadCredential= lines
  6. systemctl daemon-reload (and enable + restart with --enable)

Options:
  --wheel FILE        wheel to install (default: newest dist/edge_agent-*.whl in the repo;
                      build one with scripts/build_wheel_and_smoke.sh --no-smoke)
  --prefix DIR        install root for the venv and docs   (default /opt/edge-agent)
  --config-dir DIR    where agent.yaml goes                (default /etc/edge-agent)
  --unit-dir DIR      where the unit file goes             (default /etc/systemd/system)
  --credstore DIR     systemd credential store             (default /etc/credstore)
  --python PY         interpreter for the venv, >= 3.11    (default python3)
  --extras LIST       pip extras to install with the wheel, e.g. s3,isolation-forest
                      (default: none, the core runtime; check-config names what a config needs)
  --no-deps           install the wheel without dependencies (staging/tests only)
  --no-systemctl      do not call systemctl (staging into a temporary prefix)
  --enable            systemctl enable edge-agent and (re)start it
  -h, --help          show this help

Non-default --prefix/--config-dir are written into the installed unit's ExecStart, so a
staged install under a temporary directory is self-consistent (systemd-analyze verify
passes on it). ConfigurationDirectory=/StateDirectory= stay /etc/edge-agent and
/var/lib/edge-agent: those are systemd's, not ours.
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
wheel=""
prefix=/opt/edge-agent
config_dir=/etc/edge-agent
unit_dir=/etc/systemd/system
credstore=/etc/credstore
python=python3
no_deps=0
extras=""
use_systemctl=1
enable=0

die() { echo "install.sh: $*" >&2; exit 1; }
need_arg() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --wheel) need_arg "$@"; wheel="$2"; shift 2 ;;
        --prefix) need_arg "$@"; prefix="$2"; shift 2 ;;
        --config-dir) need_arg "$@"; config_dir="$2"; shift 2 ;;
        --unit-dir) need_arg "$@"; unit_dir="$2"; shift 2 ;;
        --credstore) need_arg "$@"; credstore="$2"; shift 2 ;;
        --python) need_arg "$@"; python="$2"; shift 2 ;;
        --extras) need_arg "$@"; extras="$2"; shift 2 ;;
        --no-deps) no_deps=1; shift ;;
        --no-systemctl) use_systemctl=0; shift ;;
        --enable) enable=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

for d in "$prefix" "$config_dir" "$unit_dir" "$credstore"; do
    case "$d" in /*) ;; *) die "paths must be absolute: $d" ;; esac
done

if [ -z "$wheel" ]; then
    wheel="$(ls -t "$repo"/dist/edge_agent-*.whl 2>/dev/null | head -n1 || true)"
    [ -n "$wheel" ] || die "no wheel given and none in $repo/dist (run scripts/build_wheel_and_smoke.sh --no-smoke)"
fi
[ -f "$wheel" ] || die "wheel not found: $wheel"
unit_src="$here/edge-agent.service"
config_src="$repo/config/agent.example.yaml"
[ -f "$unit_src" ] || die "missing $unit_src"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$python is older than 3.11"

venv="$prefix/venv"
echo "==> virtualenv $venv"
if [ ! -x "$venv/bin/python" ]; then
    install -d -m 0755 "$prefix"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip

echo "==> installing $(basename "$wheel")"
if [ "$no_deps" = 1 ]; then
    "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
else
    # Dependencies first (no-op when satisfied), then the agent itself even if the version
    # string did not change (a rebuilt wheel of the same version must still replace the old).
    # The versions CI tested (requirements.lock) when the repository is beside this script.
    constraint=()
    [ -f "$repo/requirements.lock" ] && constraint=(--constraint "$repo/requirements.lock")
    "$venv/bin/python" -m pip install --quiet "${constraint[@]}" "$wheel${extras:+[$extras]}"
    "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
fi
"$venv/bin/edge-agent" --help >/dev/null || die "the installed edge-agent does not run"

install -d -m 0755 "$prefix/docs"
if [ -f "$repo/docs/operations.md" ]; then
    install -m 0644 "$repo/docs/operations.md" "$prefix/docs/operations.md"
fi

echo "==> unit $unit_dir/edge-agent.service"
install -d -m 0755 "$unit_dir"
tmp_dir="$(mktemp -d)"
trap 'rm -rf "$tmp_dir"' EXIT
tmp_unit="$tmp_dir/edge-agent.service"  # verify needs the real unit name
sed -e "s#/opt/edge-agent/venv/bin/edge-agent#$venv/bin/edge-agent#g" \
    -e "s#/etc/edge-agent/agent.yaml#$config_dir/agent.yaml#g" \
    -e "s#file:///opt/edge-agent/docs/#file://$prefix/docs/#g" \
    "$unit_src" > "$tmp_unit"
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$tmp_unit" || die "systemd-analyze verify rejected the unit"
fi
install -m 0644 "$tmp_unit" "$unit_dir/edge-agent.service"

echo "==> config $config_dir/agent.yaml"
install -d -m 0755 "$config_dir"
if [ -e "$config_dir/agent.yaml" ]; then
    echo "    kept the existing file (compare with $config_src after upgrades)"
elif [ -f "$config_src" ]; then
    install -m 0644 "$config_src" "$config_dir/agent.yaml"
    "$venv/bin/edge-agent" check-config "$config_dir/agent.yaml" >/dev/null \
        || die "the example config does not pass check-config"
else
    die "missing $config_src"
fi

echo "==> credential store $credstore"
install -d -m 0700 "$credstore"

if [ "$use_systemctl" = 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$enable" = 1 ]; then
        systemctl enable edge-agent.service
        systemctl restart edge-agent.service
        systemctl --no-pager status edge-agent.service || true
    elif systemctl is-active --quiet edge-agent.service; then
        echo "edge-agent is running the previous version: systemctl restart edge-agent"
    else
        echo "next: edit $config_dir/agent.yaml, put secrets in $credstore (see docs), then"
        echo "      systemctl enable --now edge-agent"
    fi
else
    echo "(systemctl not called)"
fi
echo "done."
