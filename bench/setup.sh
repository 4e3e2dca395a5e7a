#!/usr/bin/env bash
# Installs what the benchmarks use besides the Python test dependencies (which bring Traefik
# and Caddy): wrk (HTTP load), nginx and HAProxy (the proxies to compare and to run the
# companion recipes), dnsperf (DNS load) and curl.
set -euo pipefail
missing=()
for tool in wrk nginx haproxy dnsperf curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install -q -e '.[test]'
