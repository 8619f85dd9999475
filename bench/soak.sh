#!/usr/bin/env bash
# Soak: SESSIONS clients cycle real transfers (download, upload, listing, in all four
# data modes) through ftpgate in front of vsftpd on loopback for DURATION seconds,
# then the proxy's resident memory, descriptor count and open sessions are compared
# with the start. Flat is the pass: the script fails if descriptors or sessions are
# left behind after the load stops. Bounded in time; loopback only. As root:
#   bash bench/soak.sh                         # 200 sessions, 10 minutes
#   DURATION=30 SESSIONS=20 bash bench/soak.sh # a quick one
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/vsftpd-anon.sh
DURATION=${DURATION:-600} SESSIONS=${SESSIONS:-200}
SERVER=127.0.0.1:2031 PROXY=127.0.0.1:2131 ADMIN=127.0.0.1:9131

bash deploy/prerequisites.sh vsftpd:vsftpd curl:curl
cargo build --release --locked -q

work=$(mktemp -d /tmp/ftpgate-soak.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/root/pub" /var/run/vsftpd/empty
chown ftp "$work/root/pub"
head -c $((4 * 1024 * 1024)) /dev/urandom > "$work/root/four.bin"
chmod 644 "$work/root/four.bin"
{
    vsftpd_anon "$work/root"
    cat <<CONF
listen=YES
listen_address=${SERVER%:*}
listen_port=${SERVER#*:}
no_anon_password=YES
anon_other_write_enable=YES
anon_umask=022
max_clients=2000
max_per_ip=2000
CONF
} > "$work/vsftpd.conf"
cat > "$work/soak.rules" <<RULES
metrics listen $ADMIN
listen reverse $PROXY upstream $SERVER
set max-sessions-per-client $((SESSIONS * 4))
set max-accept-rate-per-client 100000
pass from 127.0.0.0/8
RULES
vsftpd "$work/vsftpd.conf" >/dev/null 2>&1 &
pids+=($!)
RUST_LOG=warn target/release/ftpgate run -c "$work/soak.rules" 2>"$work/ftpgate.log" &
gate=$!
pids+=($gate)
for _ in $(seq 100); do curl -s "http://$ADMIN/healthz" >/dev/null && break; sleep 0.05; done

metric() { curl -s "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
sample() { echo "$(awk '/VmRSS/ { print $2 }' "/proc/$gate/status") $(ls "/proc/$gate/fd" | wc -l)"; }
read -r rss0 fds0 <<<"$(sample)"
echo "start: rss ${rss0} kB, ${fds0} fds; ${SESSIONS} clients for ${DURATION}s"

modes=("--ftp-pasv --disable-epsv" "--ftp-pasv" "-P - --disable-eprt" "-P -")
end=$(( $(date +%s) + DURATION ))
client() {
    local i=$1 n=0 failed=0 mode
    while [ "$(date +%s)" -lt "$end" ]; do
        mode=${modes[$(( (i + n) % 4 ))]}
        # shellcheck disable=SC2086
        curl -sS --max-time 60 $mode "ftp://$PROXY/four.bin" -o /dev/null || failed=$((failed + 1))
        # shellcheck disable=SC2086
        curl -sS --max-time 60 $mode -T "$work/root/four.bin" "ftp://$PROXY/pub/up-$i.bin" || failed=$((failed + 1))
        # shellcheck disable=SC2086
        curl -sS --max-time 60 $mode "ftp://$PROXY/pub/" -o /dev/null || failed=$((failed + 1))
        n=$((n + 1))
    done
    echo "$n $failed" > "$work/client-$i"
}
for i in $(seq "$SESSIONS"); do client "$i" & done
wait_clients() { for f in $(seq "$SESSIONS"); do while [ ! -s "$work/client-$f" ]; do sleep 1; done; done; }
wait_clients
rounds=$(cat "$work"/client-* | awk '{ r += $1; f += $2 } END { print r, f }')
read -r total failures <<<"$rounds"
for _ in $(seq 200); do [ "$(metric ftpgate_sessions_active)" = 0 ] && break; sleep 0.05; done
read -r rss1 fds1 <<<"$(sample)"
sessions=$(metric ftpgate_sessions_active)
echo "end:   rss ${rss1} kB, ${fds1} fds, ${sessions} sessions open; ${total} rounds of 3 transfers, ${failures} failed"
echo "ftpgate's expectation and data-connection outcomes:"
curl -s "http://$ADMIN/metrics" | grep -E '^ftpgate_(expectations_total|data_connections_total|expectations_refused_total)' | grep -v ' 0$' || true
echo "ftpgate's warnings, by message:"
sed -E 's/^[^ ]+ +//; s/\x1b\[[0-9;]*m//g' "$work/ftpgate.log" | grep -oE '(WARN|ERROR) .*' |
    sed -E 's/session\{[^}]*\}(:data\{[^}]*\})?: //; s/ (peer|target|error|onward|expected)=.*//' |
    sort | uniq -c | sort -rn | head -10 || true
if [ "$fds1" -gt "$fds0" ] || [ "$sessions" != 0 ] || [ "$failures" != 0 ]; then
    echo "soak: FAILED (descriptors, sessions or transfers)" >&2
    exit 1
fi
echo "soak: passed (rss change $(( rss1 - rss0 )) kB)"
