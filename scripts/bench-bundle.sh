#!/bin/bash
# Packs sluicebench into a directory that runs on another x86-64 Linux
# machine with no Swift and no DPDK installed (e.g. a many-core box to
# measure scaling on): the binary with the Swift runtime linked in, the
# shared libraries it and dpdk-testpmd load (glibc excepted), the few DPDK
# drivers the benchmark uses, and a wrapper that puts them in place.
#
#   scripts/bench-bundle.sh DIR          # build and pack
#   DIR/run sluicebench --mode bypass --workers 4 --json   # on the target
#
# The target's glibc must be at least this machine's. DPDK loads its
# drivers from a fixed directory; the wrapper fills that directory with the
# bundle's drivers when it does not exist there yet. The EAL refuses
# drivers under a world-writable directory: unpack the bundle outside /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: scripts/bench-bundle.sh DIR}
scratch=${SLUICE_BUNDLE_SCRATCH:-.build-static}
pmddir=$(pkg-config --variable=pmddir libdpdk 2>/dev/null || true)
pmddir=${pmddir:-/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0}
[ -d "$pmddir" ] || { echo "no DPDK driver directory at $pmddir" >&2; exit 1; }

swift build -c release --static-swift-stdlib --product sluicebench --scratch-path "$scratch"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp "$scratch/release/sluicebench" "$out/bin/"
strip --strip-debug "$out/bin/sluicebench"
testpmd=$(command -v dpdk-testpmd || true)
[ -n "$testpmd" ] && cp "$testpmd" "$out/bin/"

# Drivers: the ports and mempool handler the benchmark's modes use, and the
# bus the virtual devices hang on. They go beside the other libraries: one
# that is also a dependency (testpmd links several drivers) must be one file,
# or the EAL panics on a driver registered twice.
# DPDK 22.11's ABI is 23 (the project's fixed DPDK version).
drivers=(bus_vdev net_pcap net_null net_ring mempool_ring)
for d in "${drivers[@]}"; do
    cp -L "$pmddir/librte_$d.so.23" "$out/lib/"
done

# Every library those objects load, resolved here, except glibc's own (the
# target's glibc serves those). A library ldd cannot find stops the packing.
objects=("$out/bin/"* "$out/lib/"*)
deps=$(ldd "${objects[@]}" 2>/dev/null)
if grep -q "not found" <<<"$deps"; then
    grep "not found" <<<"$deps" | sort -u >&2
    exit 1
fi
awk '/=> \//{print $3}' <<<"$deps" | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|libanl.so.*|libutil.so.*) ;;
        libnsl.so.*|libmvec.so.*|libBrokenLocale.so.*|libnss_*|libthread_db.so.*|ld-linux*) ;;
        *) cp -L "$lib" "$out/lib/" ;;
    esac
done

cat > "$out/run" <<EOF
#!/bin/bash
# Runs a bundled program with the bundle's libraries and DPDK drivers.
here=\$(cd "\$(dirname "\$0")" && pwd)
# The EAL loads every driver in its directory: there, links to the
# bundle's own (the same files, so a driver loaded as a dependency too
# is not loaded twice; it takes names ending in .so), made again when a
# link is missing or points elsewhere (a bundle moved or deleted). Where
# DPDK itself is installed (its own drivers there), the bundle is not needed
# and the directory is left alone.
if [ ! -e "$pmddir/librte_net_pcap.so.23" ]; then
    mkdir -p "$pmddir" || { echo "cannot create $pmddir (run as root)" >&2; exit 1; }
    for d in ${drivers[*]}; do
        link="$pmddir/librte_\$d.so"
        if [ "\$(readlink "\$link" 2>/dev/null)" != "\$here/lib/librte_\$d.so.23" ]; then
            ln -sfn "\$here/lib/librte_\$d.so.23" "\$link" || { echo "cannot link \$link" >&2; exit 1; }
        fi
    done
fi
export LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="\$here/bin:\$PATH"
[ -x "\$here/bin/dpdk-testpmd" ] && export DPDK_TESTPMD="\$here/bin/dpdk-testpmd"
exec "\$@"
EOF
chmod +x "$out/run"
du -sh "$out"
