#!/usr/bin/env bash
# Provision what tests/remote/ needs: VictoriaMetrics single node and vmagent (Debian `victoria-metrics`),
# Prometheus as a remote-write receiver (Debian `prometheus`), and the protobuf runtime the tests decode
# remote-write requests with (the `test` extra, into .venv).
# Idempotent: installs only what is missing; nothing is started (the tests start their own on loopback).
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(victoria-metrics prometheus)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tsdb: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  # policy-rc.d keeps the packaged services from being started where an init system would start them.
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
for tool in victoria-metrics vmagent prometheus; do
  command -v "$tool" >/dev/null || { echo "tsdb: $tool missing after installation" >&2; exit 1; }
done

if [ -x .venv/bin/python ]; then
  for module in google.protobuf:protobuf cramjam:cramjam; do
    .venv/bin/python -c "import ${module%%:*}" 2>/dev/null || {
      echo "tsdb: installing ${module##*:} into .venv" >&2
      .venv/bin/pip install -q "${module##*:}"
    }
  done
fi
echo "tsdb: ready: victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics); $(prometheus --version 2>&1 | head -1)"
