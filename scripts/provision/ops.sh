#!/usr/bin/env bash
# Provision what tests/ops/ needs: Prometheus and promtool (Debian `prometheus`), systemd-analyze
# (Debian `systemd`), openssl, and the grafana-foundation-sdk the dashboards are generated with
# (the exact version pinned in pyproject.toml's `dashboards` extra, into .venv).
# Idempotent: installs only what is missing; nothing is started.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(prometheus systemd openssl faketime)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ops: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  # --no-install-recommends: no prometheus-node-exporter etc.; policy-rc.d keeps the packaged
  # Prometheus service from being started (the tests start their own on loopback).
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi
fi
for tool in prometheus promtool systemd-analyze openssl; do
  command -v "$tool" >/dev/null || { echo "ops: $tool missing after installation" >&2; exit 1; }
done

if [ -x .venv/bin/python ]; then
  pin=$(sed -n 's/^dashboards = \["\(grafana-foundation-sdk[^"]*\)"\].*/\1/p' pyproject.toml)
  if [ -z "$pin" ]; then echo "ops: no grafana-foundation-sdk pin in pyproject.toml" >&2; exit 1; fi
  want=${pin#grafana-foundation-sdk==}
  have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("grafana-foundation-sdk"))' \
         2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    echo "ops: installing $pin into .venv" >&2
    .venv/bin/pip install -q "$pin"
  fi
fi
echo "ops: ready: $(prometheus --version 2>&1 | head -1); $(systemd-analyze --version | head -1);" \
     "grafana-foundation-sdk $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("grafana-foundation-sdk"))' 2>/dev/null || echo 'not in .venv')"
