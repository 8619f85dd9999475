#!/usr/bin/env bash
# ftpgate against the Linux kernel's FTP helper and plain routing, in one run, on the
# lab topology (deploy/lab.sh: client — edge — server in network namespaces, vsftpd on
# the server, curl on the client). Prints a Markdown table of medians over interleaved
# repetitions and the ratios to the kernel helper. Exits non-zero only when a transfer
# fails, never because something is slow.
#
#   bash bench/run.sh            # 1 GiB per download, 3 repetitions (as root)
#   bash bench/run.sh --smoke    # a few seconds: proves the script works (CI)
# Environment: SIZE_MB, REPS, SMALL (RETRs per session), SESSIONS.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--smoke" ]; then
    SIZE_MB=${SIZE_MB:-8} REPS=${REPS:-1} SMALL=${SMALL:-10} SESSIONS=${SESSIONS:-5}
fi
SIZE_MB=${SIZE_MB:-1024} REPS=${REPS:-3} SMALL=${SMALL:-200} SESSIONS=${SESSIONS:-100}
P=fgbench
SERVER=203.0.113.2
CONFIGS=(routing kernel redirect tproxy)
MODES=(pasv epsv port eprt)

bash deploy/prerequisites.sh vsftpd:vsftpd curl:curl nft:nftables ip:iproute2 python3:python3
cargo build --release --locked -q
bin=$PWD/target/release/ftpgate

work=$(mktemp -d /dev/shm/ftpgate-bench.XXXXXX)
results=$work/results
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
chmod 755 "$work"
mkdir -p "$work/root" /var/run/vsftpd/empty
chmod 755 "$work/root"
head -c $((SIZE_MB * 1024 * 1024)) /dev/zero > "$work/root/big.bin"
head -c 1024 /dev/urandom > "$work/root/small.bin"
chmod 644 "$work/root/"*.bin
cat > "$work/vsftpd.conf" <<CONF
listen=NO
listen_ipv6=YES
background=NO
anonymous_enable=YES
no_anon_password=YES
local_enable=NO
anon_root=$work/root
connect_from_port_20=NO
secure_chroot_dir=/var/run/vsftpd/empty
seccomp_sandbox=NO
pasv_min_port=30000
pasv_max_port=30999
max_clients=1000
max_per_ip=1000
CONF
# Background processes are started with `ip netns exec` itself (it execs them), so
# their PIDs are the ones to kill; their output goes to files, not our pipes.
ip netns exec "$P-server" vsftpd "$work/vsftpd.conf" >"$work/vsftpd.out" 2>&1 &
pids+=($!)

gate_pid=
edge_up() {
    case "$1" in
        routing) ;;
        kernel) on edge nft -f bench/kernel-helper.nft ;;
        redirect)
            on edge nft -f deploy/nftables/ftpgate-redirect.nft
            RUST_LOG=warn ip netns exec "$P-edge" "$bin" run -c rules/edge-redirect.rules \
                >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
        tproxy)
            on edge nft -f deploy/nftables/ftpgate-tproxy.nft
            on edge bash deploy/tproxy-routing.sh add
            RUST_LOG=warn ip netns exec "$P-edge" "$bin" run -c rules/edge-tproxy.rules \
                >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
    esac
    # Ready when a control connection gets its greeting through the edge.
    for _ in $(seq 200); do
        on client curl -s --max-time 2 "ftp://$SERVER/" -o /dev/null && return 0
        sleep 0.05
    done
    echo "the $1 edge does not pass FTP" >&2
    exit 1
}
edge_down() {
    if [ -n "$gate_pid" ]; then
        kill "$gate_pid" 2>/dev/null || true
        wait "$gate_pid" 2>/dev/null || true
        gate_pid=
    fi
    on edge nft delete table inet ftpgate 2>/dev/null || true
    on edge nft delete table inet bench 2>/dev/null || true
    on edge bash deploy/tproxy-routing.sh del
}

curl_mode() {
    case "$1" in
        pasv) echo "--ftp-pasv --disable-epsv" ;;
        epsv) echo "--ftp-pasv" ;;
        port) echo "-P - --disable-eprt" ;;
        eprt) echo "-P -" ;;
    esac
}

now() { date +%s.%N; }
record() { echo "$1 $2 $3" >> "$results"; }

measure() {
    local config=$1 mode out speed size start end urls
    for mode in "${MODES[@]}"; do
        # shellcheck disable=SC2046
        out=$(on client curl -sS $(curl_mode "$mode") -o /dev/null \
            -w '%{speed_download} %{size_download}' "ftp://$SERVER/big.bin")
        read -r speed size <<<"$out"
        [ "$size" = $((SIZE_MB * 1024 * 1024)) ] || { echo "$config $mode: got $size bytes" >&2; exit 1; }
        record "$config" "throughput-$mode" "$speed"
    done
    urls=$(for _ in $(seq "$SMALL"); do printf 'ftp://%s/small.bin ' "$SERVER"; done)
    for mode in epsv port; do
        start=$(now)
        # shellcheck disable=SC2046,SC2086
        on client curl -sS $(curl_mode "$mode") $urls -o /dev/null -o /dev/null >/dev/null 2>&1 ||
            on client curl -sS $(curl_mode "$mode") $urls >/dev/null
        end=$(now)
        record "$config" "setup-$mode" "$(python3 -c "print($SMALL / ($end - $start))")"
    done
    start=$(now)
    for _ in $(seq "$SESSIONS"); do
        on client curl -sS "ftp://$SERVER/" -o /dev/null
    done
    end=$(now)
    record "$config" "sessions" "$(python3 -c "print($SESSIONS / ($end - $start))")"
}

for rep in $(seq "$REPS"); do
    for config in "${CONFIGS[@]}"; do
        echo "repetition $rep/$REPS: $config" >&2
        edge_up "$config"
        measure "$config"
        edge_down
    done
done

python3 - "$results" "$SIZE_MB" "$REPS" "$SMALL" "$SESSIONS" <<'PY'
import statistics, sys
path, size, reps, small, sessions = sys.argv[1:]
values = {}
for line in open(path):
    config, metric, value = line.split()
    values.setdefault((metric, config), []).append(float(value))
configs = ["routing", "kernel", "redirect", "tproxy"]
metrics = sorted({m for m, _ in values}, key=lambda m: (not m.startswith("throughput"), m))
def fmt(metric, v):
    if metric.startswith("throughput"):
        return f"{v / 1e9:.2f} GB/s"
    return f"{v:.0f}/s"
print(f"\n{size} MiB downloads, {small} RETRs per session for setup rate, {sessions} sessions "
      f"(login, LIST, QUIT) for session rate; medians of {reps} interleaved repetitions.\n")
print("| metric | routing | kernel helper | ftpgate REDIRECT | ftpgate TPROXY | REDIRECT / kernel | TPROXY / kernel |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for m in metrics:
    med = {c: statistics.median(values[(m, c)]) for c in configs}
    ratio = lambda c: f"{med[c] / med['kernel']:.2f}" if med["kernel"] else "-"
    print(f"| {m} | " + " | ".join(fmt(m, med[c]) for c in configs) + f" | {ratio('redirect')} | {ratio('tproxy')} |")
PY
