#!/usr/bin/env bash
# README command 2: install what the tests need, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The end-to-end tests run the real binaries: debug build for behaviour, the
# release sluicebench for the allocation/retain count (debug code retains).
swift build
swift build -c release --product sluicebench
./scripts/build-alloc-counter.sh
swift test "$@"
