#!/bin/sh
# Builds DPDK's own IPsec gateway example, ipsec-secgw (its source ships in
# Debian's dpdk-doc package), into .build/secgw/ipsec-secgw for
# `sluicebench --mode outbound|inbound --baseline secgw`. Not part of the
# product or the tests; nothing of it is committed.
#
# One change is made to the copy before building: the example always asks
# its ports for RX checksum offload, which the virtual devices of the
# benchmark (net_pcap, net_null) do not offer, so it would refuse to start;
# the patched line asks only for what the port advertises.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/.build/secgw"
examples=/usr/share/dpdk/examples
if [ ! -d "$examples/ipsec-secgw" ]; then
    apt-get install -y dpdk-doc >/dev/null || { apt-get update >/dev/null && apt-get install -y dpdk-doc >/dev/null; }
fi
rm -rf "$out/src"
mkdir -p "$out/src"
cp -r "$examples/ipsec-secgw" "$examples/common" "$out/src/"
file="$out/src/ipsec-secgw/ipsec-secgw.c"
sed -i 's/^\([[:space:]]*\)local_port_conf\.rxmode\.offloads |= req_rx_offloads;/\1local_port_conf.rxmode.offloads \&= dev_info.rx_offload_capa;\n&/' "$file"
grep -q 'local_port_conf.rxmode.offloads &= dev_info.rx_offload_capa;' "$file" || {
    echo "build-secgw: the offload line to patch was not found in $file" >&2; exit 1; }
make -s -C "$out/src/ipsec-secgw" >/dev/null
cp "$out/src/ipsec-secgw/build/ipsec-secgw" "$out/ipsec-secgw"
echo "$out/ipsec-secgw"
