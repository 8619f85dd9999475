#!/usr/bin/env python3
"""Data-connection setup latency as a client sees it, with Python's ftplib.

  setup_latency.py HOST passive|active COUNT FILE

Logs in anonymously, then COUNT times: announces a data connection (EPSV, or EPRT
for active), sends RETR FILE and times from the announcement to the first data
byte: the announcement's round trip, the connection through the edge (for ftpgate,
the expectation, the onward connect or the kernel hole) and the server's first
byte. Prints "p50 p99" in seconds. Exits non-zero if a transfer fails.

bench/setup_rate.py uses session() and retrieve() from here.
"""
import ftplib
import statistics
import sys
import time


def session(host, passive, epsv=False):
    """An anonymous binary session; with `epsv`, passive connections are announced
    with EPSV (ftplib sends PASV over IPv4)."""
    ftp = ftplib.FTP(host, timeout=20)
    ftp.login()
    ftp.voidcmd("TYPE I")
    ftp.set_pasv(passive)
    if epsv:
        ftp.makepasv = lambda: ftplib.parse229(ftp.sendcmd("EPSV"), ftp.sock.getpeername())
    return ftp


def retrieve(ftp, path):
    """Downloads `path` over a new data connection; returns the seconds from the
    announcement to the first data byte. A transfer that takes over a second is
    reported on stderr with the phase it spent it in (a stall, not a slow machine:
    one transfer takes well under a millisecond here)."""
    start = time.perf_counter()
    conn = ftp.transfercmd("RETR " + path)
    opened = time.perf_counter()
    first = conn.recv(65536)
    elapsed = time.perf_counter() - start
    if not first:
        sys.exit("no data")
    while conn.recv(65536):
        pass
    local = conn.getsockname()
    peer = conn.getpeername()
    conn.close()
    ftp.voidresp()
    total = time.perf_counter() - start
    if total > 1:
        print(f"{time.strftime('%H:%M:%S')} stall: {total:.3f} s (announce, connect and "
              f"150: {opened - start:.3f} s; first byte: {elapsed - (opened - start):.3f} s; "
              f"rest and 226: {total - elapsed:.3f} s), data connection {local} -> {peer}",
              file=sys.stderr, flush=True)
    return elapsed


def main():
    host, mode, count, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ftp = session(host, mode == "passive")
    samples = sorted(retrieve(ftp, path) for _ in range(count))
    ftp.quit()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    print(statistics.median(samples), p99)


if __name__ == "__main__":
    main()
