#!/usr/bin/env bash
# ftpgate end to end on this machine: a real vsftpd on 127.0.0.1:2021, ftpgate in
# front of it on 127.0.0.1:2121, real curl transfers through the proxy in passive
# and active mode, then the proxy's metrics and session log.
# Run as root on Debian (it installs vsftpd and curl if missing).
# KEEP=1 leaves vsftpd and ftpgate running for you to explore; Ctrl-C stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/vsftpd-anon.sh

SERVER=127.0.0.1:2021 PROXY=127.0.0.1:2121 ADMIN=127.0.0.1:9121

bash deploy/prerequisites.sh vsftpd:vsftpd curl:curl

echo "== building ftpgate (release)"
cargo build --release --locked -q
bin=target/release/ftpgate

work=$(mktemp -d /tmp/ftpgate-demo.XXXXXX)
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
echo "hello through ftpgate" > "$work/root/hello.txt"
head -c $((10 * 1024 * 1024)) /dev/urandom > "$work/root/pub/ten.bin"
chmod 644 "$work/root/hello.txt" "$work/root/pub/ten.bin"
{
    vsftpd_anon "$work/root"
    cat <<CONF
listen=YES
listen_ipv6=NO
listen_address=${SERVER%:*}
listen_port=${SERVER#*:}
anon_umask=022
CONF
} > "$work/vsftpd.conf"
cat > "$work/demo.rules" <<RULES
metrics listen $ADMIN
listen reverse $PROXY upstream $SERVER
set data-ports 40000-40999
pass from 127.0.0.0/8 to ${SERVER%:*} port ${SERVER#*:}
block log
RULES

echo "== rule file ($work/demo.rules)"
cat "$work/demo.rules"
"$bin" check "$work/demo.rules"

vsftpd "$work/vsftpd.conf" & pids+=($!)
"$bin" run -c "$work/demo.rules" 2> "$work/ftpgate.log" & pids+=($!)
for _ in $(seq 100); do
    curl -s "http://$ADMIN/healthz" >/dev/null 2>&1 && curl -s "ftp://$SERVER/" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== passive (EPSV) download through the proxy"
curl -sS "ftp://$PROXY/hello.txt"
echo "== passive (PASV) download of 10 MiB, checksum compared"
curl -sS --disable-epsv "ftp://$PROXY/pub/ten.bin" -o "$work/ten.bin"
sha256sum "$work/root/pub/ten.bin" "$work/ten.bin" | awk '{print $1}' | uniq | wc -l | grep -qx 1
echo "same checksum: $(sha256sum < "$work/ten.bin" | cut -c1-16)…"
echo "== active (PORT) upload of 10 MiB"
curl -sS -P - --disable-eprt -T "$work/ten.bin" "ftp://$PROXY/pub/uploaded.bin"
cmp "$work/ten.bin" "$work/root/pub/uploaded.bin" && echo "uploaded file is identical"
echo "== a bounce attempt (PORT naming another host) is refused"
curl -sS -v -P 127.0.0.2 --disable-eprt "ftp://$PROXY/hello.txt" 2>&1 | grep -E '^[<>] (PORT|5)' | sed 's/^/   /' || true

echo "== metrics (non-zero series): curl http://$ADMIN/metrics"
curl -s "http://$ADMIN/metrics" | grep -E '^ftpgate_(data_bytes_total|expectations_total|expectations_refused_total|sessions_total|commands_total\{verb="(PASV|EPSV|PORT)")' | grep -v ' 0$'
echo "== the live session table during a (rate-limited) download: ftpgate sessions"
curl -sS --limit-rate 2M "ftp://$PROXY/pub/ten.bin" -o /dev/null &
slow=$!
for _ in $(seq 100); do
    curl -s "http://$ADMIN/metrics" | grep -q '^ftpgate_expectations_active 1' && break
    sleep 0.05
done
"$bin" sessions --admin "$ADMIN"
wait "$slow"
echo "== ftpgate's transfer log"
grep -E "transfer|refused" "$work/ftpgate.log" | sed 's/^/   /'

if [ "${KEEP:-0}" = 1 ]; then
    echo "== running: ftp://$PROXY (proxy), http://$ADMIN/metrics; Ctrl-C to stop"
    wait
fi
