#!/usr/bin/env bash
# ftpgate against the Linux kernel's FTP helper and plain routing, in one run, on the
# lab topology (deploy/lab.sh: client — edge — server in network namespaces, vsftpd on
# the server, curl and Python's ftplib on the client). ftpgate runs in REDIRECT and
# TPROXY mode, each with the user-space relay and with `data-path kernel`. Prints
# Markdown tables of medians over interleaved repetitions and the ratios to the kernel
# helper. Exits non-zero only when a transfer fails, never because something is slow.
#
#   bash bench/run.sh            # 1 GiB per transfer, 3 repetitions (as root)
#   bash bench/run.sh --smoke    # a few seconds: proves the script works (CI)
# Environment: SIZE_MB, REPS, SMALL (RETRs per session), SESSIONS, LATENCY (timed
# data connections per mode), CONFIGS (a subset, e.g. "helper redirect-kernel"; also
# "lineproxy": bench/line_proxy.rs, the smallest user-space control channel, the floor
# for any proxy that reads the control connection; "relayfloor": the same program with
# --relay, which also relays the data connections, the floor for ftpgate's relay; it
# speaks no EPRT and no IPv6, so it runs the setup, latency and session rows only;
# "kernelfloor": bench/kernel_floor.rs, the line proxy plus the nftables hole per data
# connection, written by ftpgate's own code, the floor for `data-path kernel`, with the
# same limits; "kernelfloor-tokio": the same on one single-threaded tokio runtime, the
# floor for the kernel path on ftpgate's design; "kernelfloor-tproxy",
# "kernelfloor-tokio-tproxy": both under the TPROXY ruleset, taking connections as a
# `tproxy` listener does, the floors for the TPROXY kernel path. None runs by default).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/vsftpd-anon.sh

if [ "${1:-}" = "--smoke" ]; then
    SIZE_MB=${SIZE_MB:-8} REPS=${REPS:-1} SMALL=${SMALL:-10} SESSIONS=${SESSIONS:-5}
    LATENCY=${LATENCY:-10}
fi
SIZE_MB=${SIZE_MB:-1024} REPS=${REPS:-3} SMALL=${SMALL:-200} SESSIONS=${SESSIONS:-100}
LATENCY=${LATENCY:-200}
P=fgbench
SERVER=203.0.113.2
SERVER6=2001:db8:2::2
read -r -a CONFIGS <<<"${CONFIGS:-routing helper redirect tproxy redirect-kernel tproxy-kernel}"
# IPv4 in every mode; curl speaks only EPSV and EPRT over IPv6.
MODES=(pasv epsv port eprt epsv6 eprt6)

bash deploy/prerequisites.sh vsftpd:vsftpd curl:curl nft:nftables ip:iproute2 python3:python3 \
    tcpdump:tcpdump openssl:openssl
cargo build --release --locked -q --bin ftpgate --example kernel_floor
bin=$PWD/target/release/ftpgate

work=$(mktemp -d /dev/shm/ftpgate-bench.XXXXXX)
results=$work/results
pids=()
on() { ip netns exec "$P-$1" "${@:2}"; }
gate_pid=
dump=
cleanup() {
    local status=$?
    if [ "$status" != 0 ] && [ -s "$work/ftpgate.log" ]; then
        echo "--- the edge's log (warnings and errors), last 50 lines:" >&2
        tail -n 50 "$work/ftpgate.log" >&2 || true
    fi
    # A failed transfer exits here with ftpgate (and perhaps a capture) still running:
    # they must go too, or `wait` would wait for them forever.
    for pid in "${pids[@]}" $gate_pid $dump; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash deploy/lab.sh down "$P"
    rm -rf "$work"
}
trap cleanup EXIT

bash deploy/lab.sh up "$P"
chmod 755 "$work"
# The floor for a user-space control channel (config lineproxy), std only.
rustc -O --edition 2024 bench/line_proxy.rs -o "$work/line_proxy"
mkdir -p "$work/root/up" /var/run/vsftpd/empty
chmod 755 "$work/root"
chown ftp "$work/root/up"
head -c $((SIZE_MB * 1024 * 1024)) /dev/zero > "$work/root/big.bin"
head -c 1024 /dev/urandom > "$work/root/small.bin"
chmod 644 "$work/root/"*.bin
# FTPS (issue 17): one certificate for vsftpd's own TLS (the direct transfer) and for
# ftpgate's toward the clients; curl is told not to check it (-k).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
    -keyout "$work/tls.key" -out "$work/tls.pem" -subj "/CN=$SERVER" \
    -addext "subjectAltName=IP:$SERVER,IP:$SERVER6" 2>/dev/null
chmod 644 "$work/tls.key"
# The shipped edge rules, as they are and with the kernel data path on every listener,
# each with ftpgate's TLS offered to the clients (`tls client optional`): a clear client
# sees no difference, an FTPS one (the ftps-* rows) is terminated by ftpgate. Over
# IPv4 the server's leg stays clear (row ftps-epsv); over IPv6 ftpgate speaks TLS to
# vsftpd too, both legs encrypted as ProFTPD's mod_proxy does it (row ftps-both-epsv6;
# `no-verify`: the lab's certificate is a self-signed one, which no CA store holds).
for flavour in redirect tproxy; do
    tls() {
        sed -E -e '/2001:db8/ s/^(pass from [^#]*[^ #])( *#.*)?$/\1 tls client optional tls server match no-verify\2/' \
            -e '/2001:db8/! s/^(pass from [^#]*[^ #])( *#.*)?$/\1 tls client optional\2/'
        echo "tls cert $work/tls.pem key $work/tls.key"
    }
    tls < "rules/edge-$flavour.rules" > "$work/edge-$flavour.rules"
    sed -E 's/^(listen [^#]*[^ #])( *#.*)?$/\1 data-path kernel\2/' "rules/edge-$flavour.rules" |
        tls > "$work/edge-$flavour-kernel.rules"
done
{
    vsftpd_anon "$work/root"
    cat <<CONF
listen=NO
listen_ipv6=YES
no_anon_password=YES
anon_other_write_enable=YES
pasv_min_port=30000
pasv_max_port=30999
max_clients=1000
max_per_ip=1000
# For the lineproxy floor only: its data connections come straight from the client
# while its control connection comes from the edge, which vsftpd refuses by default.
# The other configurations pass both from one address, so this changes nothing there.
pasv_promiscuous=YES
port_promiscuous=YES
# FTPS for the direct transfer (routing) of the ftps-* rows; clear clients stay clear.
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
require_ssl_reuse=NO
rsa_cert_file=$work/tls.pem
rsa_private_key_file=$work/tls.key
CONF
} > "$work/vsftpd.conf"
# Background processes are started with `ip netns exec` itself (it execs them), so
# their PIDs are the ones to kill; their output goes to files, not our pipes.
ip netns exec "$P-server" vsftpd "$work/vsftpd.conf" >"$work/vsftpd.out" 2>&1 &
pids+=($!)

gate() {
    RUST_LOG=warn ip netns exec "$P-edge" "$bin" run -c "$1" >/dev/null 2>>"$work/ftpgate.log" &
    gate_pid=$!
}
edge_up() {
    case "$1" in
        routing) ;;
        helper) on edge nft -f bench/kernel-helper.nft ;;
        lineproxy)
            on edge nft -f bench/line-proxy.nft
            ip netns exec "$P-edge" "$work/line_proxy" '[::]:8021' >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
        relayfloor)
            on edge nft -f bench/relay-floor.nft
            ip netns exec "$P-edge" "$work/line_proxy" --relay '[::]:8021' >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
        kernelfloor | kernelfloor-tokio)
            on edge nft -f deploy/nftables/ftpgate-redirect.nft
            if [ "$1" = kernelfloor ]; then flag=(); else flag=(--tokio); fi
            ip netns exec "$P-edge" target/release/examples/kernel_floor "${flag[@]}" '[::]:8021' \
                >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
        kernelfloor-tproxy | kernelfloor-tokio-tproxy)
            on edge nft -f deploy/nftables/ftpgate-tproxy.nft
            on edge bash deploy/tproxy-routing.sh add deploy/nftables/ftpgate-tproxy.nft
            if [ "$1" = kernelfloor-tproxy ]; then flag=(--tproxy); else flag=(--tokio --tproxy); fi
            # The addresses of rules/edge-tproxy.rules' listeners.
            ip netns exec "$P-edge" target/release/examples/kernel_floor "${flag[@]}" \
                0.0.0.0:8021 '[::]:8021' >/dev/null 2>>"$work/ftpgate.log" &
            gate_pid=$!
            ;;
        redirect | redirect-kernel)
            on edge nft -f deploy/nftables/ftpgate-redirect.nft
            if [ "$1" = redirect ]; then gate "$work/edge-redirect.rules"; else gate "$work/edge-redirect-kernel.rules"; fi
            ;;
        tproxy | tproxy-kernel)
            on edge nft -f deploy/nftables/ftpgate-tproxy.nft
            on edge bash deploy/tproxy-routing.sh add deploy/nftables/ftpgate-tproxy.nft
            if [ "$1" = tproxy ]; then gate "$work/edge-tproxy.rules"; else gate "$work/edge-tproxy-kernel.rules"; fi
            ;;
        *) echo "unknown configuration $1" >&2; exit 2 ;;
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
        epsv | epsv6) echo "--ftp-pasv" ;;
        port) echo "-P - --disable-eprt" ;;
        eprt | eprt6) echo "-P -" ;;
    esac
}
server_of() {
    case "$1" in
        *6) echo "[$SERVER6]" ;;
        *) echo "$SERVER" ;;
    esac
}

now() { date +%s.%N; }
record() { echo "$rep $1 $2 $3" >> "$results"; }

# One download and one upload of big.bin with curl ARGS…, sizes checked on both ends,
# recorded as download-ROW and upload-ROW (ftps-ROW as ftps-download-… and
# ftps-upload-…).  usage: down_and_up CONFIG ROW HOST ARGS…
down_and_up() {
    local config=$1 row=$2 host=$3 out speed size bytes=$((SIZE_MB * 1024 * 1024))
    shift 3
    local down="download-$row" up="upload-$row"
    case "$row" in ftps-*) down="ftps-download-${row#ftps-}" up="ftps-upload-${row#ftps-}" ;; esac
    out=$(on client curl -sS "$@" -o /dev/null \
        -w '%{speed_download} %{size_download}' "ftp://$host/big.bin")
    read -r speed size <<<"$out"
    [ "$size" = "$bytes" ] || { echo "$config $down: got $size bytes" >&2; exit 1; }
    record "$config" "$down" "$speed"
    out=$(on client curl -sS "$@" -T "$work/root/big.bin" \
        -w '%{speed_upload} %{size_upload}' "ftp://$host/up/big.bin")
    read -r speed size <<<"$out"
    [ "$size" = "$bytes" ] && [ "$(stat -c %s "$work/root/up/big.bin")" = "$bytes" ] ||
        { echo "$config $up: sent $size bytes" >&2; exit 1; }
    rm -f "$work/root/up/big.bin"
    record "$config" "$up" "$speed"
}

measure() {
    local config=$1 mode out start end p50 p99
    local modes=("${MODES[@]}")
    case "$config" in relayfloor | kernelfloor*) modes=() ;; esac
    for mode in "${modes[@]}"; do
        # shellcheck disable=SC2046
        down_and_up "$config" "$mode" "$(server_of "$mode")" $(curl_mode "$mode")
    done
    # FTPS with protected data (curl --ssl-reqd: AUTH TLS, PROT P), passive: directly
    # to vsftpd's own TLS (routing), or terminated by ftpgate toward a clear vsftpd
    # (IPv4) or toward vsftpd's TLS (IPv6: both legs). curl 7.88 never starts TLS on an
    # active-mode data connection, so passive only.
    case "$config" in
        routing | redirect | tproxy | redirect-kernel | tproxy-kernel)
            down_and_up "$config" ftps-epsv "$SERVER" -k --ssl-reqd --ftp-pasv
            down_and_up "$config" ftps-both-epsv6 "[$SERVER6]" -k --ssl-reqd --ftp-pasv
            ;;
    esac
    for mode in passive active; do
        out=$(on client python3 bench/setup_latency.py "$SERVER" "$mode" "$LATENCY" small.bin) ||
            { echo "$config latency-$mode: a transfer failed" >&2; exit 1; }
        read -r p50 p99 <<<"$out"
        record "$config" "latency-$mode-p50" "$p50"
        record "$config" "latency-$mode-p99" "$p99"
    done
    # ftplib, not curl: bench/setup_rate.py says why.
    for mode in epsv port; do
        rate=$(on client python3 bench/setup_rate.py "$SERVER" "$mode" "$SMALL" small.bin) ||
            { echo "$config setup-$mode: a transfer failed" >&2; exit 1; }
        record "$config" "setup-$mode" "$rate"
    done
    # Where a transfer's time goes: each control message's time inside the edge, from
    # a capture on the edge while the same workload runs (bench/phases.py).
    for mode in epsv port; do
        # Not through on(): $! must be tcpdump itself, not a subshell, for the kill.
        ip netns exec "$P-edge" tcpdump --immediate-mode -i any -tt -n -l \
            "tcp port 21 and tcp[tcpflags] & tcp-push != 0" >"$work/capture" 2>"$work/capture.err" &
        dump=$!
        until grep -q "listening on" "$work/capture.err"; do
            kill -0 "$dump" 2>/dev/null || { cat "$work/capture.err" >&2; exit 1; }
            sleep 0.01
        done
        on client python3 bench/setup_rate.py "$SERVER" "$mode" "$SMALL" small.bin >/dev/null ||
            { echo "$config phases-$mode: a transfer failed" >&2; exit 1; }
        kill -INT "$dump"
        wait "$dump" || true
        dump=
        python3 bench/phases.py "$work/capture" > "$work/phases.json"
        python3 - "$work/phases.json" "$rep $config edge-$mode" >> "$results" <<'PY'
import json, sys
phases = json.load(open(sys.argv[1]))
print(sys.argv[2], phases["inside_total_us"] / 1e6)
for message, us in phases["inside_us"].items():
    print(f"{sys.argv[2]}-{message}", us / 1e6)
PY
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

python3 - "$results" "$SIZE_MB" "$REPS" "$SMALL" "$SESSIONS" "$LATENCY" "${CONFIGS[@]}" <<'PY'
import statistics, sys
path, size, reps, small, sessions, latency, *configs = sys.argv[1:]
values = {}
by_rep = {}
for line in open(path):
    rep, config, metric, value = line.split()
    values.setdefault((metric, config), []).append(float(value))
    by_rep[(metric, config, rep)] = float(value)
names = {
    "routing": "routing", "helper": "kernel helper", "redirect": "REDIRECT relay",
    "tproxy": "TPROXY relay", "redirect-kernel": "REDIRECT kernel path",
    "tproxy-kernel": "TPROXY kernel path", "lineproxy": "line proxy (floor)",
    "relayfloor": "relay floor", "kernelfloor": "kernel-path floor",
    "kernelfloor-tokio": "kernel-path floor (event loop)",
    "kernelfloor-tproxy": "TPROXY kernel-path floor",
    "kernelfloor-tokio-tproxy": "TPROXY kernel-path floor (event loop)",
}
order = ["download", "upload", "ftps", "setup", "sessions", "latency", "edge"]
metrics = sorted({m for m, _ in values}, key=lambda m: (order.index(m.split("-")[0]), m))
med = {(m, c): statistics.median(values[(m, c)]) for (m, c) in values}
def spread(m, c):
    v = values[(m, c)]
    return f" ({fmt(m, min(v)).split()[0]}–{fmt(m, max(v))})" if len(v) > 1 else ""
def rep_ratio(m, c, base="helper"):
    # The configurations of one repetition ran back to back, so the ratio within a
    # repetition cancels what drifts between repetitions; the median of those ratios.
    ratios = [by_rep[(m, c, r)] / by_rep[(m, base, r)]
              for (mm, cc, r) in by_rep if mm == m and cc == c
              if by_rep.get((m, base, r))]
    return statistics.median(ratios) if ratios else None
def fmt(metric, v):
    if metric.startswith(("download", "upload", "ftps")):
        return f"{v / 1e9:.2f} GB/s"
    if metric.startswith("latency"):
        return f"{v * 1e3:.2f} ms"
    if metric.startswith("edge"):
        return f"{v * 1e6:.0f} µs"
    return f"{v:.0f}/s"
targets = {"download": 0.95, "upload": 0.95, "setup": 0.90, "sessions": 0.95}
print(f"\n{size} MiB per transfer (curl; IPv6 in EPSV and EPRT only), {small} RETRs per session "
      f"for setup rate, {sessions} sessions (login, LIST, QUIT) for session rate, {latency} "
      f"timed data connections per mode for latency (ftplib: announcement to first data "
      f"byte); edge-MODE: the control messages' time inside the edge per transfer, "
      f"edge-MODE-MESSAGE each message's (bench/phases.py, a capture of the setup "
      f"workload); medians of {reps} interleaved repetitions.\n")
print("Medians (lowest–highest repetition):\n")
print("| metric | " + " | ".join(names[c] for c in configs) + " |")
print("|" + " --- |" * (len(configs) + 1))
for m in metrics:
    print(f"| {m} | " + " | ".join(fmt(m, med[(m, c)]) + spread(m, c) if (m, c) in med else "-" for c in configs) + " |")
gates = [c for c in configs if c not in ("routing", "helper")]
if "helper" in configs and gates:
    print("\nRatio to the kernel helper, the median of the ratios within each repetition "
          "(throughput and rates: higher is better, ✓ at the issue's target; latency "
          "and time inside the edge: added, from the medians).\n")
    print("| metric | target | " + " | ".join(names[c] for c in gates) + " |")
    print("|" + " --- |" * (len(gates) + 2))
    for m in metrics:
        kind = m.split("-")[0]
        if kind == "ftps":
            continue  # the helper cannot see into TLS; the next table compares these
        base = med.get((m, "helper"))
        cells = []
        for c in gates:
            v = med.get((m, c))
            if v is None or not base:
                cells.append("-")
            elif kind == "latency":
                cells.append(f"{(v - base) * 1e3:+.2f} ms")
            elif kind == "edge":
                cells.append(f"{(v - base) * 1e6:+.0f} µs")
            else:
                r = rep_ratio(m, c)
                cells.append(f"{r:.2f}" + (" ✓" if r >= targets[kind] else ""))
        target = f"≥ {targets[kind]:.2f}" if kind in targets else "reported"
        print(f"| {m} | {target} | " + " | ".join(cells) + " |")
# Issue 17: FTPS with protected data through ftpgate against the same transfer made
# directly to the server's own TLS.
ftps = [m for m in metrics if m.startswith("ftps")]
tls_gates = [c for c in configs if c not in ("routing", "helper") and any((m, c) in med for m in ftps)]
if ftps and "routing" in configs and tls_gates:
    print("\nFTPS with protected data (curl --ssl-reqd, PROT P, passive): ratio to the same "
          "transfer made directly to vsftpd's own TLS (routing), the median of the ratios "
          "within each repetition (✓ at issue 17's target, 0.80).\n")
    print("| metric | target | " + " | ".join(names[c] for c in tls_gates) + " |")
    print("|" + " --- |" * (len(tls_gates) + 2))
    for m in ftps:
        cells = []
        for c in tls_gates:
            r = rep_ratio(m, c, "routing")
            cells.append("-" if r is None else f"{r:.2f}" + (" ✓" if r >= 0.80 else ""))
        print(f"| {m} | ≥ 0.80 | " + " | ".join(cells) + " |")
# Issue 16: where a target is out of reach for a user-space control channel, ftpgate
# must sit within 5 % of the smallest program that does the same job.
# The event-loop floor separates what ftpgate's design costs from what ftpgate does.
floors = [("relayfloor", "lineproxy"), ("kernelfloor", "lineproxy"),
          ("kernelfloor-tokio", "kernelfloor"),
          ("redirect", "relayfloor"), ("tproxy", "relayfloor"),
          ("redirect-kernel", "kernelfloor"), ("tproxy-kernel", "kernelfloor"),
          ("redirect-kernel", "kernelfloor-tokio"), ("tproxy-kernel", "kernelfloor-tokio"),
          ("kernelfloor-tproxy", "kernelfloor"),
          ("kernelfloor-tokio-tproxy", "kernelfloor-tproxy"),
          ("tproxy-kernel", "kernelfloor-tproxy"), ("tproxy-kernel", "kernelfloor-tokio-tproxy")]
pairs = [(c, f) for c, f in floors if c in configs and f in configs]
# The TPROXY kernel path against a floor under the REDIRECT ruleset measures the
# rulesets' difference too: not shown when the floor under its own ruleset ran.
pairs = [(c, f) for c, f in pairs
         if not (c == "tproxy-kernel" and f + "-tproxy" in configs)]
if pairs:
    print("\nRatio to the floor, the median of the ratios within each repetition (✓ within "
          "5 %).\n")
    print("| metric | " + " | ".join(f"{names[c]} / {names[f]}" for c, f in pairs) + " |")
    print("|" + " --- |" * (len(pairs) + 1))
    for m in metrics:
        if m.split("-")[0] not in ("setup", "sessions"):
            continue
        cells = []
        for c, f in pairs:
            r = rep_ratio(m, c, f)
            cells.append("-" if r is None else f"{r:.2f}" + (" ✓" if r >= 0.95 else ""))
        print(f"| {m} | " + " | ".join(cells) + " |")
PY
