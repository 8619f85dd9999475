#!/usr/bin/env python3
"""Data-connection setup rate as a client sees it, with Python's ftplib.

  setup_rate.py HOST epsv|port COUNT FILE

Logs in anonymously, then downloads FILE COUNT times in the one session, each over
a new data connection announced with EPSV (passive) or PORT (active), and prints the
transfers per second. Exits non-zero if a transfer fails.

Why not curl with COUNT URLs, as bench/run.sh did until issue 16: curl 7.88 (Debian
12) sometimes takes a 229 that arrives while it is still sending EPSV and then defers
the data connect until its 1 s multi timeout; through ftpgate's kernel path that hit
about one transfer in 800, and a single 1 s stall in a run of 200 one-KiB transfers
(0.2 s) is a fifth of the rate. bench/README.md has the trace.
"""
import sys
import time

from setup_latency import retrieve, session


def main():
    host, mode, count, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ftp = session(host, mode == "epsv", epsv=True)
    start = time.perf_counter()
    for _ in range(count):
        retrieve(ftp, path)
    elapsed = time.perf_counter() - start
    ftp.quit()
    print(count / elapsed)


if __name__ == "__main__":
    main()
