#!/usr/bin/env bash
# Set up capacityd from a fresh Debian 12 checkout: system packages, a virtualenv in .venv and the
# package itself (editable). Idempotent and quick when everything is already there.
#   scripts/setup.sh          runtime + the demo estate's extras (what scripts/demo needs)
#   scripts/setup.sh --test   plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# libvirt-python builds from source against Debian's libvirt-dev through pkg-config.
packages=(python3 python3-venv python3-dev gcc pkg-config libvirt-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip wheel
fi

extras="[demo]"
if [ "${1:-}" = "--test" ]; then extras="[demo,test,dashboards]"; fi
# Re-install only when pyproject.toml changed since the last install.
stamp=".venv/.capacityd-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing capacityd${extras} into .venv" >&2
  .venv/bin/pip install -q -e ".${extras}"
  touch "$stamp"
fi
