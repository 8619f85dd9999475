#!/usr/bin/env python3
"""Idle-session memory of ftpgate: N clients log in through ftpgate to a minimal FTP
server and stay idle; ftpgate's RSS and PSS are read before and with them all open.

The server is a few lines of asyncio (a forking vsftpd cannot hold 10 000 sessions on
a 2-core machine; ftpgate's memory is what is measured, not the server's). Loopback
only, bounded: the clients connect, log in, are measured, and quit.

  python3 bench/idle.py --ftpgate target/release/ftpgate --sessions 10000
"""
import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVER, PROXY, ADMIN = ("127.0.0.1", 2041), ("127.0.0.1", 2141), "127.0.0.1:9141"


async def serve_ftp(reader, writer):
    """Greets, accepts any login, answers NOOP, says goodbye to QUIT."""
    writer.write(b"220 idle bench\r\n")
    await writer.drain()
    while line := await reader.readline():
        verb = line.split(b" ", 1)[0].strip().upper()
        reply = {b"USER": b"331 ok", b"PASS": b"230 in", b"NOOP": b"200 ok", b"QUIT": b"221 bye"}
        writer.write(reply.get(verb, b"502 no") + b"\r\n")
        await writer.drain()
        if verb == b"QUIT":
            break
    writer.close()


async def client(hold: asyncio.Event, ready: list):
    reader, writer = await asyncio.open_connection(*PROXY)
    await reader.readline()
    for cmd in (b"USER anonymous\r\n", b"PASS x\r\n"):
        writer.write(cmd)
        await writer.drain()
        reply = await reader.readline()
    if not reply.startswith(b"230"):
        raise RuntimeError(f"login failed: {reply!r}")
    ready.append(1)
    await hold.wait()
    writer.write(b"QUIT\r\n")
    await writer.drain()
    await reader.readline()
    writer.close()


def run_server(ready):
    """The FTP server, in its own process: its sockets count against its own limit."""
    raise_fd_limit(20000)

    async def main():
        server = await asyncio.start_server(serve_ftp, *SERVER, backlog=4096)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def raise_fd_limit(need: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, need), hard), hard))


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    rollup = open(f"/proc/{pid}/smaps_rollup").read()
    rss = int(re.search(r"^Rss:\s+(\d+)", rollup, re.M).group(1))
    pss = int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))
    return rss, pss


def metric(name: str) -> float:
    text = urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=10).read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def main(args) -> int:
    # ftpgate holds two sockets per session; the machine's hard limit bounds it.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if 2 * args.sessions + 100 > hard:
        print(f"{args.sessions} sessions need {2 * args.sessions + 100} descriptors in "
              f"ftpgate; the hard limit here is {hard}", file=sys.stderr)
        return 2
    raise_fd_limit(args.sessions + 100)
    up = multiprocessing.Event()
    server = multiprocessing.Process(target=run_server, args=(up,), daemon=True)
    server.start()
    up.wait(10)
    work = tempfile.mkdtemp(prefix="ftpgate-idle.")
    rules = os.path.join(work, "idle.rules")
    with open(rules, "w") as f:
        f.write(
            f"metrics listen {ADMIN}\nlisten reverse {PROXY[0]}:{PROXY[1]} "
            f"upstream {SERVER[0]}:{SERVER[1]}\nset max-sessions {args.sessions + 100}\n"
            f"set max-sessions-per-client {args.sessions + 100}\n"
            "set max-accept-rate-per-client 1000000\npass from 127.0.0.0/8\n"
        )
    gate = subprocess.Popen(
        ["prlimit", f"--nofile={hard}", args.ftpgate, "run", "-c", rules],
        env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        for _ in range(200):
            try:
                metric("ftpgate_sessions_active")
                break
            except OSError:
                await asyncio.sleep(0.05)
        # One session first, so the runtime's own start-up allocations are in the base.
        hold, ready = asyncio.Event(), []
        warm = asyncio.create_task(client(hold, ready))
        while not ready:
            await asyncio.sleep(0.01)
        base_rss, base_pss = memory(gate.pid)
        started = time.monotonic()
        tasks = []
        for i in range(args.sessions - 1):
            tasks.append(asyncio.create_task(client(hold, ready)))
            if i % 200 == 199:  # bounded bursts, within the listen backlog
                while len(ready) < i + 1:
                    await asyncio.sleep(0.01)
        while len(ready) < args.sessions:
            await asyncio.sleep(0.05)
        setup = time.monotonic() - started
        active = metric("ftpgate_sessions_active")
        await asyncio.sleep(1)  # let allocator caches settle before reading
        rss, pss = memory(gate.pid)
        per_rss = (rss - base_rss) * 1024 / (args.sessions - 1)
        per_pss = (pss - base_pss) * 1024 / (args.sessions - 1)
        print(f"| sessions held | {int(active)} (logged in, idle; opened in {setup:.1f} s) |")
        print(f"| ftpgate RSS | {base_rss} KiB with 1 session, {rss} KiB with {args.sessions} |")
        print(f"| per idle session | {per_rss / 1024:.1f} KiB RSS, {per_pss / 1024:.1f} KiB PSS |")
        hold.set()
        await asyncio.gather(warm, *tasks)
        target = 16 * 1024
        ok = int(active) == args.sessions
        print(f"target <= 16 KiB per idle session: {'met' if per_pss <= target else 'NOT met'}")
        return 0 if ok else 1
    finally:
        gate.terminate()
        gate.wait()
        server.terminate()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ftpgate", default="target/release/ftpgate")
    p.add_argument("--sessions", type=int, default=10000)
    sys.exit(asyncio.run(main(p.parse_args())))
