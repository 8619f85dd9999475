#!/usr/bin/env bash
# A three-host FTP edge lab in network namespaces: the topology deploy/README.md
# walks through and the transparent-mode tests build.
#
#   PREFIX-client              PREFIX-edge                    PREFIX-server
#   c0 198.51.100.2  ──── e0 198.51.100.1    e1 203.0.113.1 ──── s0 203.0.113.2
#      198.51.100.3 (a       2001:db8:1::1      2001:db8:2::1       203.0.113.66 (a third host)
#      second client)                                                2001:db8:2::2, ::66
#      2001:db8:1::2, ::3
#
# usage: deploy/lab.sh up|down [PREFIX]      (default PREFIX: ftpgate)
# Run a command on a host: ip netns exec PREFIX-client curl ftp://203.0.113.2/
set -euo pipefail
action=${1:?usage: lab.sh up|down [PREFIX]}
p=${2:-ftpgate}

on() { ip netns exec "$p-$1" "${@:2}"; }

down() {
    for host in client edge server; do
        ip netns del "$p-$host" 2>/dev/null || true
    done
}

up() {
    down
    for host in client edge server; do
        ip netns add "$p-$host"
        on "$host" ip link set lo up
    done
    # Each end is created inside its namespace, so names only need to be unique there.
    ip link add c0 netns "$p-client" type veth peer name e0 netns "$p-edge"
    ip link add s0 netns "$p-server" type veth peer name e1 netns "$p-edge"

    on client ip addr add 198.51.100.2/24 dev c0
    on client ip addr add 198.51.100.3/24 dev c0
    on client ip -6 addr add 2001:db8:1::2/64 dev c0 nodad
    # Secondary addresses are deprecated so they are never picked as a source by
    # default; tests bind them explicitly.
    on client ip -6 addr add 2001:db8:1::3/64 dev c0 nodad preferred_lft 0
    on edge ip addr add 198.51.100.1/24 dev e0
    on edge ip -6 addr add 2001:db8:1::1/64 dev e0 nodad
    on edge ip addr add 203.0.113.1/24 dev e1
    on edge ip -6 addr add 2001:db8:2::1/64 dev e1 nodad
    on server ip addr add 203.0.113.2/24 dev s0
    on server ip addr add 203.0.113.66/24 dev s0
    on server ip -6 addr add 2001:db8:2::2/64 dev s0 nodad
    on server ip -6 addr add 2001:db8:2::66/64 dev s0 nodad preferred_lft 0
    on client ip link set c0 up
    on edge ip link set e0 up
    on edge ip link set e1 up
    on server ip link set s0 up

    on client ip route add default via 198.51.100.1
    on client ip -6 route add default via 2001:db8:1::1
    on server ip route add default via 203.0.113.1
    on server ip -6 route add default via 2001:db8:2::1
    # The edge routes; deploy/sysctl.d/90-ftpgate.conf sets the same on a real router.
    on edge sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

case "$action" in
    up) up ;;
    down) down ;;
    *) echo "usage: lab.sh up|down [PREFIX]" >&2; exit 2 ;;
esac
