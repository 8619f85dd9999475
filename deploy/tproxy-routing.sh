#!/usr/bin/env bash
# Policy routing for the TPROXY flavour: packets that the ftpgate TPROXY ruleset marks
# are delivered to local sockets (ftpgate's) instead of being forwarded.
#
# usage: tproxy-routing.sh add|del|show [RULESET]
#   RULESET: the installed TPROXY ruleset, whose `define tproxy_mark = …` is the mark
#            (default /etc/ftpgate/ftpgate.nft, else deploy/nftables/ftpgate-tproxy.nft
#            beside this script), so the mark is written in one file only.
#   TABLE:   the routing table in the environment (default 247).
#
# `add` and `del` may be run any number of times: `add` replaces what an earlier `add`
# made, `del` removes what is there. At boot, deploy/ftpgate-tproxy-routing.service runs
# `add` before ftpgate starts.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
action=${1:?usage: tproxy-routing.sh add|del|show [RULESET]}
ruleset=${2:-}
if [[ -z $ruleset ]]; then
    for candidate in /etc/ftpgate/ftpgate.nft "$here/nftables/ftpgate-tproxy.nft"; do
        if [[ -r $candidate ]]; then ruleset=$candidate; break; fi
    done
fi
if [[ -z ${MARK:-} ]]; then
    [[ -r $ruleset ]] || { echo "tproxy-routing.sh: no ruleset to read tproxy_mark from (give its path)" >&2; exit 2; }
    MARK=$(sed -n 's/^[[:space:]]*define[[:space:]]\+tproxy_mark[[:space:]]*=[[:space:]]*\([0-9a-fA-Fx]\+\).*/\1/p' "$ruleset" | head -n1)
    [[ -n $MARK ]] || { echo "tproxy-routing.sh: $ruleset has no \`define tproxy_mark = …\`" >&2; exit 2; }
fi
TABLE=${TABLE:-247}

del() {
    local family=$1
    # Every rule for this mark and table, however many earlier runs left.
    while ip "$family" rule del fwmark "$MARK" lookup "$TABLE" 2>/dev/null; do :; done
    ip "$family" route flush table "$TABLE" 2>/dev/null || true
}

case "$action" in
    add)
        for family in -4 -6; do
            del "$family"
            ip "$family" rule add fwmark "$MARK" lookup "$TABLE"
            ip "$family" route replace local default dev lo table "$TABLE"
        done
        ;;
    del)
        for family in -4 -6; do del "$family"; done
        ;;
    show)
        for family in -4 -6; do
            ip "$family" rule show fwmark "$MARK"
            ip "$family" route show table "$TABLE"
        done
        ;;
    *) echo "usage: tproxy-routing.sh add|del|show [RULESET]" >&2; exit 2 ;;
esac
