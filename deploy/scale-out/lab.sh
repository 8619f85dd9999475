#!/usr/bin/env bash
# The scale-out lab of deploy/scale-out/README.md in network namespaces on one Linux
# machine (its kernel needs IPVS: the ip_vs modules): clients, two directors, three
# ftpgate instances and two FTP servers, on two switched networks.
#
#   clients 198.51.100.101-106 ─┐                 ┌─ so-g1 203.0.113.11 ┐
#                               ├─ out ─ so-d1 ─ in ─┼─ so-g2 203.0.113.12 ├─ so-s1 203.0.113.21
#   virtual address 198.51.100.10  (so-d2 beside)    └─ so-g3 203.0.113.13 ┘  so-s2 203.0.113.22
#
# The directors hold 198.51.100.10 (out) and 203.0.113.1 (in, the instances' gateway)
# by VRRP. This script builds the networks and the hosts only; the README starts the
# daemons on them, and tests/scale_out.rs does the same.
#
#   bash deploy/scale-out/lab.sh up|down
set -euo pipefail
P=so
hosts=(client d1 d2 g1 g2 g3 s1 s2)

down() {
    for h in "${hosts[@]}" sw; do ip netns del "$P-$h" 2>/dev/null || true; done
}

# A host's interface NAME on switch BRIDGE, with ADDRESSES.
plug() {
    local host=$1 name=$2 bridge=$3
    shift 3
    ip link add "$host-$name" netns "$P-sw" type veth peer name "$name" netns "$P-$host"
    ip -n "$P-sw" link set "$host-$name" master "$bridge" up
    for address in "$@"; do ip -n "$P-$host" addr add "$address" dev "$name"; done
    ip -n "$P-$host" link set "$name" up
}

up() {
    down
    # IPVS and the packet marks it balances by; modprobe -d where the kernel's modules
    # are not under /lib/modules (tests/support/vm.sh).
    modprobe ${FTPGATE_VM_MODULES:+-d "$FTPGATE_VM_MODULES"} -a ip_vs ip_vs_rr nf_conntrack \
        veth bridge nf_tables 2>/dev/null || true
    [ -e /proc/net/ip_vs ] || { echo "lab.sh: this kernel has no IPVS (ip_vs)" >&2; exit 1; }
    for h in sw "${hosts[@]}"; do
        ip netns add "$P-$h"
        ip -n "$P-$h" link set lo up
    done
    for bridge in out in; do
        ip -n "$P-sw" link add "$bridge" type bridge
        ip -n "$P-sw" link set "$bridge" up
    done
    plug client eth out 198.51.100.101/24 198.51.100.102/24 198.51.100.103/24 \
        198.51.100.104/24 198.51.100.105/24 198.51.100.106/24
    # Replies to active-mode data connections, which the instances open themselves.
    ip -n "$P-client" route add 203.0.113.0/24 via 198.51.100.10
    for n in 1 2; do
        plug "d$n" o out "198.51.100.$((1 + n))/24"
        plug "d$n" i in "203.0.113.$((1 + n))/24"
        ip netns exec "$P-d$n" sysctl -qw net.ipv4.ip_forward=1
        # A persistence template that names an instance at weight 0 (not ready: dead
        # or draining) expires at its client's next connection, which then goes to a
        # ready instance; the connections the instance has go on.
        ip netns exec "$P-d$n" sysctl -qw net.ipv4.vs.expire_quiescent_template=1
        # IPVS answers on the virtual address only where VRRP put it.
        ip netns exec "$P-d$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1
    done
    for n in 1 2 3; do
        plug "g$n" eth in "203.0.113.$((10 + n))/24"
        ip -n "$P-g$n" route add default via 203.0.113.1
    done
    for n in 1 2; do
        plug "s$n" eth in "203.0.113.$((20 + n))/24"
        ip -n "$P-s$n" route add default via 203.0.113.1
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
