#!/usr/bin/env bash
# Soak through the transparent edge, the way a busy edge is used: CLIENTS concurrent
# clients (bench/edge_soak.py) cycle PASV, EPSV, PORT and EPRT over IPv4 and IPv6
# through ftpgate behind the shipped REDIRECT ruleset, in the deploy/lab.sh topology,
# for SECONDS per data path: small downloads, 1 MiB downloads checked by SHA-256,
# 64 KiB uploads checked by SIZE. Injected meanwhile: a reload (SIGHUP) every 20 s,
# a 200-connection burst, a silent client, a data connection reset mid-download, a
# bounce attempt, and a server session killed every 30 s.
#
# Prints, per data path, transfers attempted, completed and failed by cause, what each
# fault saw, and ftpgate's state before and after: descriptors, RSS, the session and
# expectation gauges, the nftables maps. Failures a killed server session explains are
# counted apart; any other failure, a leak or a non-zero gauge makes the exit status 1.
# As root; bounded in time (SECONDS per path plus about 40 s).
#   bash bench/edge_soak.sh                      # relay and kernel, 150 s each
#   SECONDS_PER_PATH=30 bash bench/edge_soak.sh kernel
#   KILLS=0 bash bench/edge_soak.sh kernel      # without killing server sessions
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/vsftpd-anon.sh
SECONDS_PER_PATH=${SECONDS_PER_PATH:-150} CLIENTS=${CLIENTS:-64}
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(relay kernel)
P=fgsoak

bash deploy/prerequisites.sh vsftpd:vsftpd nft:nftables ip:iproute2 python3:python3 curl:curl
cargo build --release --locked -q
bin=$PWD/target/release/ftpgate

work=$(mktemp -d /tmp/ftpgate-edge-soak.XXXXXX)
chmod 755 "$work"
pids=()
on() { ip netns exec "$P-$1" "${@:2}"; }
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash deploy/lab.sh down "$P"
    rm -rf "$work"
}
trap cleanup EXIT

bash deploy/lab.sh up "$P"
on edge nft -f deploy/nftables/ftpgate-redirect.nft
mkdir -p "$work/root/pub" /var/run/vsftpd/empty
chown ftp "$work/root/pub"
head -c 4096 /dev/urandom > "$work/root/small.bin"
head -c $((1024 * 1024)) /dev/urandom > "$work/root/one.bin"
chmod 644 "$work/root/"*.bin
want=$(sha256sum "$work/root/one.bin" | cut -d' ' -f1)
{
    vsftpd_anon "$work/root"
    cat <<CONF
listen=NO
listen_ipv6=YES
listen_port=21
no_anon_password=YES
anon_umask=022
pasv_min_port=30000
pasv_max_port=30999
max_clients=2000
max_per_ip=2000
CONF
} > "$work/vsftpd.conf"
# Started with `ip netns exec` itself, not through `on`, so that $! is the program.
ip netns exec "$P-server" vsftpd "$work/vsftpd.conf" >/dev/null 2>&1 &
vsftpd_pid=$!
pids+=("$vsftpd_pid")

# The shipped edge rules, with the limits a single busy client address needs here.
rules() {
    sed -e "s/^\(listen .*\)#\(.*\)$/\1 $1 #\2/" -e "s/^\(listen [^#]*\)$/\1 $1/" \
        rules/edge-redirect.rules
    cat <<RULES
set max-sessions-per-client 2000
set max-accept-rate-per-client 100000
RULES
}

gauge() { on edge curl -s http://127.0.0.1:9121/metrics | awk -v m="$1" '$1 == m {print $2}'; }
fds() { ls "/proc/$1/fd" | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
elements() { on edge nft -j list table inet ftpgate | python3 -c "import json,sys; print(sum(len(o[k].get(\"elem\", [])) for o in json.load(sys.stdin)[\"nftables\"] for k in (\"set\", \"map\") if k in o))"; }

status=0
for path in "${paths[@]}"; do
    case "$path" in
        relay) rules "" > "$work/edge.rules" ;;
        kernel) rules "data-path kernel" > "$work/edge.rules" ;;
        *) echo "unknown data path: $path" >&2; exit 2 ;;
    esac
    RUST_LOG=warn ip netns exec "$P-edge" "$bin" run -c "$work/edge.rules" \
        2> "$work/ftpgate-$path.log" &
    gate_pid=$!
    pids+=("$gate_pid")
    for _ in $(seq 100); do
        [ -n "$(gauge ftpgate_sessions_active)" ] && break
        sleep 0.1
    done
    fds0=$(fds "$gate_pid") rss0=$(rss "$gate_pid")

    # Reloads and killed server sessions while the clients run.
    (
        end=$((SECONDS + SECONDS_PER_PATH))
        n=0
        while [ $SECONDS -lt "$end" ]; do
            sleep 10
            n=$((n + 1))
            if [ $((n % 2)) -eq 0 ]; then kill -HUP "$gate_pid"; fi
            if [ "${KILLS:-1}" = 1 ] && [ $((n % 3)) -eq 0 ]; then
                # A session process of vsftpd (a child of the listener), killed hard.
                victim=$(pgrep -P "$vsftpd_pid" | shuf -n1 || true)
                if [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null; then
                    echo kill >> "$work/kills-$path"
                fi
            fi
        done
        true
    ) &
    faults=$!
    on client python3 bench/edge_soak.py "$SECONDS_PER_PATH" "$CLIENTS" "$want" \
        > "$work/result-$path.json"
    wait "$faults" || true
    kills=0
    [ -f "$work/kills-$path" ] && kills=$(wc -l < "$work/kills-$path")

    # Everything the load left must go: sessions end, holes close, descriptors return.
    for _ in $(seq 100); do
        [ "$(gauge ftpgate_sessions_active)" = 0 ] && [ "$(gauge ftpgate_expectations_active)" = 0 ] && break
        sleep 0.2
    done
    sessions=$(gauge ftpgate_sessions_active) expectations=$(gauge ftpgate_expectations_active)
    fds1=$(fds "$gate_pid") rss1=$(rss "$gate_pid") elems=$(elements)
    python3 - "$work/result-$path.json" "$path" "$kills" "$fds0" "$fds1" "$rss0" "$rss1" \
        "$sessions" "$expectations" "$elems" <<'PY' || status=1
import json, sys
r = json.load(open(sys.argv[1]))
path, kills, fds0, fds1, rss0, rss1, sessions, expectations, elems = sys.argv[2:]
kills = int(kills)
# A killed vsftpd session shows as its control connection lost, or as "500 OOPS";
# on the kernel path also as a passive data connection refused: the client reaches the
# server's passive port itself, and that listener died with the session.
def by_kill(cause):
    return (cause.startswith("control-lost") or "OOPS" in cause
            or (path == "kernel" and cause.startswith("data-connect-")
                and cause.endswith("ConnectionRefusedError")))
lost = sum(n for cause, n in r["failed"].items() if by_kill(cause))
explained = min(lost, kills)
unexpected = sum(r["failed"].values()) - explained
print(f"## {path}: {r['attempted']} transfers, {r['completed']} completed, "
      f"{sum(r['failed'].values())} failed ({explained} by the {kills} killed server sessions, "
      f"{unexpected} unexpected)")
for cause, n in sorted(r["failed"].items()):
    print(f"  failed {n:5d}  {cause}")
for name, saw in sorted(r["faults"].items()):
    print(f"  fault {name}: {json.dumps(saw, sort_keys=True)}")
print(f"  descriptors {fds0} -> {fds1}, RSS {rss0} -> {rss1} KiB, sessions_active {sessions}, "
      f"expectations_active {expectations}, nftables elements {elems}")
faults = r["faults"]
ok = (unexpected == 0 and int(fds1) <= int(fds0) and sessions == "0" and expectations == "0"
      and elems == "0" and faults.get("bounce", {}).get("reply") == "504"
      and faults.get("burst", {}).get("failed") == {}
      and faults.get("data_reset", {}).get("then") == "200")
print(f"  {'ok' if ok else 'NOT OK'}")
sys.exit(0 if ok else 1)
PY
    echo "  ftpgate warnings: $(grep -c . "$work/ftpgate-$path.log" || true)"
    { grep -v 'refused reason="bounce"' "$work/ftpgate-$path.log" || true; } | sort -k3 | uniq -c -f3 |
        head -8 | sed 's/^/    /'
    kill "$gate_pid" 2>/dev/null || true
    wait "$gate_pid" 2>/dev/null || true
done
exit $status
