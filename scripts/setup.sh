#!/usr/bin/env bash
# Installs everything vipd's build, lab, tests and benchmark need on a fresh Debian 12 machine (as root),
# then builds. Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gobgpd golang-github-osrg-gobgp-dev frr etcd-server etcd-client
  iproute2 nftables conntrack util-linux procps psmisc openssl curl ca-certificates
  haproxy nginx-light libnginx-mod-stream wrk iperf3
  chromium systemd bird2
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system-wide services we do not want: the lab runs its own instances in
# network namespaces, and a host-wide etcd, nginx or FRR would only hold ports and memory.
for svc in etcd frr nginx haproxy bird; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
echo "setup: ok ($(gobgpd --version 2>&1 | head -1), FRR $(dpkg-query -W -f='${Version}' frr), node $(node --version))"
