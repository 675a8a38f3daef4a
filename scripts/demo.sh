#!/usr/bin/env bash
# README command 1: install the Debian packages, build in release mode, and run
# the gateway engine on its built-in default: two virtual (ring) ports,
# generated 64-byte traffic over 256 flows, plaintext (bypass) forwarding, with
# periodic and final throughput. Extra arguments go to sluicebench.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build -c release
exec .build/release/sluicebench --mode bypass --size 64 --flows 256 --workers 1 --seconds 5 "$@"
