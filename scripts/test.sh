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
# DPDK's ipsec-secgw: the second independent ESP peer of the interop tests.
./scripts/build-secgw.sh >/dev/null
swift test "$@"
# The live SPD update and SA churn tests again, built with AddressSanitizer: the
# control thread publishing and freeing snapshots while the worker reads them;
# and the hostile-frame campaign through the whole worker path.
# LeakSanitizer is on; scripts/lsan.supp names the leaks that are not ours.
if [ "$#" -eq 0 ]; then
    swift build --build-tests --sanitize=address --scratch-path .build-asan
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp" \
        swift test --skip-build --sanitize=address --scratch-path .build-asan --filter "policyChangesUnderTraffic|saChurnNeverUsesADeletedSA|saChurnAtScale|SADReplica|hostileFrames"
    # The ESP transforms under libFuzzer + AddressSanitizer for a minute
    # (Tests/Fuzz; the suite above ran the same checks over seeded mutations).
    ./scripts/fuzz.sh 60
fi
