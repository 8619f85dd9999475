#!/usr/bin/env bash
# Policy routing for the TPROXY flavour: packets that deploy/nftables/ftpgate-tproxy.nft
# marks are delivered to local sockets (ftpgate's) instead of being forwarded.
# usage: tproxy-routing.sh add|del      (MARK and TABLE may be set in the environment)
set -euo pipefail
MARK=${MARK:-0x1f7}
TABLE=${TABLE:-247}
case "${1:?usage: tproxy-routing.sh add|del}" in
    add)
        for family in -4 -6; do
            ip "$family" rule add fwmark "$MARK" lookup "$TABLE"
            ip "$family" route add local default dev lo table "$TABLE"
        done
        ;;
    del)
        for family in -4 -6; do
            ip "$family" rule del fwmark "$MARK" lookup "$TABLE" 2>/dev/null || true
            ip "$family" route flush table "$TABLE" 2>/dev/null || true
        done
        ;;
    *) echo "usage: tproxy-routing.sh add|del" >&2; exit 2 ;;
esac
