#!/usr/bin/env bash
# Quietroom on a fresh Debian machine (Python >= 3.11). One script, two jobs:
#   scripts/dev.sh demo [--port P]   set up, then run the gateway on embedded defaults
#   scripts/dev.sh test [pytest args] set up (Debian packages too), then lint, type-check, test
# Everything it installs comes from this repository's own files: pyproject.toml,
# constraints.txt (the pinned versions) and the Debian package list below.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the test suite starts for real (never mocked, never skipped).
TEST_DEBIAN_PACKAGES=(redis-server coturn iproute2 chromium)
# deploy/ is checked with these: `docker-compose config` (no container engine needed),
# `nginx -t` and `systemd-analyze verify`, and nginx runs in front of a gateway (its own
# process, never the service).
TEST_DEBIAN_PACKAGES+=(docker-compose nginx openssl systemd)
# The compiled forwarding path (gateway/media/_native.pyx) is built by pip with these; the
# tests require it. `demo` installs without them if they are missing (Python path only).
TEST_DEBIAN_PACKAGES+=(gcc libc6-dev python3-dev)
# Debian starts these services when it installs them; the tests start their own.
STOP_AFTER_INSTALL=(nginx)

PYTHON=${PYTHON:-python3}
VENV=${QUIETROOM_VENV:-.venv}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
        for pkg in "${missing[@]}"; do
            if [[ " ${STOP_AFTER_INSTALL[*]} " == *" $pkg "* ]]; then
                stop_debian_service "$pkg"
            fi
        done
    fi
}

# Stop and disable a service that a package installed just now started.
stop_debian_service() {
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now "$1" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$1" ]; then
        as_root "/etc/init.d/$1" stop >/dev/null 2>&1 || true
    fi
}

ensure_venv() {
    local extra=$1
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "Quietroom needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version)" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtual environment in $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing Python packages (pinned by constraints.txt)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c constraints.txt -e ".${extra}"
}

case "${1:-}" in
    demo)
        shift
        ensure_venv ""
        exec "$VENV/bin/quietroom" demo "$@"
        ;;
    test)
        shift
        ensure_debian_packages "${TEST_DEBIAN_PACKAGES[@]}"
        ensure_venv "[test]"
        say "ruff"
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        say "mypy (strict)"
        "$VENV/bin/mypy"
        say "pytest"
        if [ "$(id -u)" -eq 0 ]; then
            # A network namespace with only loopback: every server the tests start, and
            # every WebRTC peer (which tries all addresses it knows), stays on this machine.
            exec unshare --net -- sh -c 'ip link set lo up && exec "$0" "$@"' \
                "$VENV/bin/pytest" "$@"
        fi
        echo "not root: running without a loopback-only network namespace" >&2
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        echo "usage: scripts/dev.sh demo [--port P] | scripts/dev.sh test [pytest args]" >&2
        exit 2
        ;;
esac
