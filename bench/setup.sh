#!/usr/bin/env bash
# Installs what the benchmarks use besides the Python test dependencies: wrk (HTTP load),
# nginx (the proxy to compare against) and curl.
set -euo pipefail
missing=()
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install -q -e '.[test]'
