#!/usr/bin/env bash
# Coverage-guided fuzzing of the ESP transforms: libFuzzer with
# AddressSanitizer over Tests/Fuzz (sluicefuzz), which checks every input
# against an independent reading of RFC 4303 / RFC 6040 and aborts on the
# first broken rule, leaving the input in .build-fuzz/artifacts/.
# usage: scripts/fuzz.sh [SECONDS] [libFuzzer options…]   (default 60 s)
# A saved input is replayed, with its explanation, by
#   .build/debug/sluicefuzz .build-fuzz/artifacts/crash-…
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
# The seed writer: an ordinary build of the same target.
swift build --product sluicefuzz
fuzzer=.build-fuzz/debug/sluicefuzz
# The sanitizers are named in one -sanitize= argument, not as two
# --sanitize options: SwiftPM 6.3 keeps those in a Set, whose order changes
# from run to run, and the Swift driver then keeps only the last one.
# "address, fuzzer" gave a fuzzer build; "fuzzer, address" gave an ASan build
# with no coverage at all (libFuzzer saw only the C shim's 234 edges). The
# --sanitize=fuzzer that stays tells SwiftPM that libFuzzer provides main.
flags=(--sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address
       -Xswiftc -DSLUICE_FUZZ -Xswiftc -use-ld=lld)
stamp=.build-fuzz/flags
[ "$(cat "$stamp" 2>/dev/null)" = "${flags[*]}" ] || rm -rf .build-fuzz
mkdir -p .build-fuzz && echo "${flags[*]}" > "$stamp"
swift build --product sluicefuzz --scratch-path .build-fuzz "${flags[@]}" 2>&1 \
    | { grep -v "Cannot export local symbol" || true; }
[ "${PIPESTATUS[0]}" -eq 0 ] && [ -x "$fuzzer" ] || { echo "fuzz.sh: the libFuzzer build failed" >&2; exit 1; }
# One counter per instrumented edge: the Swift modules bring tens of thousands.
size=$(readelf -S -W "$fuzzer" | awk '$2 == "__sancov_cntrs" { print $6 }')
counters=$(( 16#${size:-0} ))
[ "$counters" -ge 5000 ] || { echo "fuzz.sh: only $counters coverage counters in $fuzzer: the Swift code is not instrumented" >&2; exit 1; }
corpus=.build-fuzz/corpus
mkdir -p "$corpus" .build-fuzz/artifacts
.build/debug/sluicefuzz --write-seeds "$corpus"
log=.build-fuzz/last-run.log
# Swift's own crash reporter would spend minutes symbolicating libFuzzer's abort.
set +e
SWIFT_BACKTRACE=enable=no "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=.build-fuzz/artifacts/ -print_final_stats=1 "$@" "$corpus" > "$log" 2>&1
status=$?
set -e
grep -E "Loaded 1 modules|INITED|DONE|sluicefuzz:|^input|SUMMARY|stat::number_of_executed_units|new_units_added" "$log" || true
[ "$status" -eq 0 ] || { echo "fuzz.sh: libFuzzer found a broken rule or a crash (exit $status); log: $log" >&2; exit 1; }
# A run that never reached the ESP code would pass vacuously: the coverage
# libFuzzer reports at the end must be that of the transforms, not of the harness alone.
coverage=$(grep -oE "DONE +cov: [0-9]+" "$log" | grep -oE "[0-9]+$" || echo 0)
[ "$coverage" -ge 1000 ] || { echo "fuzz.sh: only $coverage edges covered: not instrumented?" >&2; exit 1; }
echo "fuzz.sh: ${seconds}s, $coverage edges covered, no rule broken"
