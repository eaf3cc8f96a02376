#!/usr/bin/env bash
# Provision the REAL OpenStack services the OpenStack tests and benchmark run against:
# openstack-placement and nova (all-in-one, fake-driver computes), from PyPI, in their own venv
# (they pin oslo.*/SQLAlchemy versions that must not leak into capacityd's venv).
#
# Idempotent: an existing, working venv at $OPENSTACK_VENV is reused (a marker records the
# package versions that were installed). Takes about 2 minutes from nothing.
set -euo pipefail

CACHE_DIR="${CAPACITYD_CI_CACHE:-/var/cache/capacityd-ci}"
OPENSTACK_VENV="${OPENSTACK_VENV:-$CACHE_DIR/openstack-venv}"
PYTHON="${PYTHON:-python3}"
# Nova 34 / Placement 16 are what the recipe, the fixtures and the tests were built against.
PACKAGES=("openstack-placement>=16.0,<17" "nova>=34.0,<35")
MARKER="$OPENSTACK_VENV/.capacityd-provisioned"
WANT="${PACKAGES[*]}"

mkdir -p "$CACHE_DIR"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" ]] \
    && "$OPENSTACK_VENV/bin/python" -c "import placement.deploy, nova.virt.fake" 2>/dev/null; then
    echo "openstack: reusing $OPENSTACK_VENV ($("$OPENSTACK_VENV/bin/pip" show nova 2>/dev/null | sed -n 's/^Version: //p' | head -1))"
    exit 0
fi

echo "openstack: creating $OPENSTACK_VENV"
rm -rf "$OPENSTACK_VENV"
"$PYTHON" -m venv "$OPENSTACK_VENV"
# (pip's notes about unreachable extra index locations are noise here; real errors still fail the step)
"$OPENSTACK_VENV/bin/pip" install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
"$OPENSTACK_VENV/bin/pip" install --quiet "${PACKAGES[@]}" 2>&1 | { grep -v "^WARNING: Location" || true; }
"$OPENSTACK_VENV/bin/python" -c "import placement.deploy, nova.virt.fake" \
    || { echo "openstack: installed packages do not import" >&2; exit 1; }
echo "$WANT" > "$MARKER"
echo "openstack: ready: $("$OPENSTACK_VENV/bin/pip" show nova openstack-placement | sed -n 's/^\(Name\|Version\): //p' | paste -sd' ')"
