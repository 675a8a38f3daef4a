#!/usr/bin/env bash
# Builds the LD_PRELOAD allocation/retain counter used by the zero-allocation test.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .build
cc -O2 -shared -fPIC -o .build/alloc_counter.so Perf/alloc-counter/alloc_counter.c -ldl
