#!/usr/bin/env bash
# Installs what the benchmarks use besides the Python test dependencies: wrk (HTTP load).
set -euo pipefail
if ! command -v wrk >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
python3 -m pip install -q -e '.[test]'
