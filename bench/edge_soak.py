#!/usr/bin/env python3
"""The client side of bench/edge_soak.sh, run in the lab's client namespace.

CLIENTS workers cycle sessions through the transparent edge for SECONDS: each session
logs in and makes five transfers, each in a mode and family picked in turn (PASV, EPSV,
PORT, EPRT over IPv4; EPSV, EPRT over IPv6): a small download, a 1 MiB download checked
against its SHA-256, or a 64 KiB upload checked with SIZE. Beside them, the injected
faults: a 200-connection burst, a client that connects and says nothing, a data
connection reset mid-download, and a bounce attempt (PORT naming a third host).

Prints one JSON object: transfers attempted, completed and failed by cause, and what
each fault saw. Every wait is bounded (30 s per socket operation).
"""
import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

V4, V6 = "203.0.113.2", "2001:db8:2::2"
THIRD = "203.0.113.66"
TIMEOUT = 30
# Upload names are new in every run (anonymous uploads cannot overwrite).
RUN = f"{os.getpid()}x{int(time.time())}"
MODES = [("pasv", V4), ("epsv", V4), ("port", V4), ("eprt", V4), ("epsv", V6), ("eprt", V6)]


class Failed(Exception):
    """A transfer that did not complete, with its cause."""


class Control:
    def __init__(self, host, source=None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if source:
            self.sock.bind((source, 0))
        self.host = host
        self.last = "greeting"
        try:
            self.sock.connect((host, 21))
        except OSError as e:
            raise Failed(f"control-connect: {type(e).__name__}")
        self.file = self.sock.makefile("rb")
        self.expect(self.reply(), "220", "greeting")

    def reply(self):
        after = self.last
        try:
            line = self.file.readline().decode("latin-1")
        except socket.timeout:
            raise Failed(f"control-timeout after {after}")
        except OSError as e:
            raise Failed(f"control-lost: {type(e).__name__} after {after}")
        if not line:
            raise Failed(f"control-lost: eof after {after}")
        if len(line) > 3 and line[3] == "-":
            code = line[:3]
            while True:
                more = self.file.readline().decode("latin-1")
                if not more:
                    raise Failed(f"control-lost: eof in a reply to {after}")
                if more[:3] == code and more[3:4] == " ":
                    break
        return line.strip()

    def cmd(self, line):
        self.last = line.split()[0]
        try:
            self.sock.sendall(line.encode() + b"\r\n")
        except OSError as e:
            raise Failed(f"control-lost: {type(e).__name__}")
        return self.reply()

    @staticmethod
    def expect(reply, prefix, what):
        if not reply.startswith(prefix):
            # vsftpd's session dies with "500 OOPS: ..." when its other half is killed.
            oops = " (server OOPS)" if "OOPS" in reply else ""
            raise Failed(f"{what}: {reply[:3]}{oops} {reply[4:44]!r}")
        return reply

    def login(self):
        reply = self.expect(self.cmd("USER anonymous"), ("2", "3"), "login")
        if reply.startswith("3"):
            self.expect(self.cmd("PASS soak@"), "2", "login")
        self.expect(self.cmd("TYPE I"), "2", "type")

    def close(self):
        try:
            self.cmd("QUIT")
        except Failed:
            pass
        self.sock.close()


def data_socket(c, mode):
    """Sets up the data connection for the next transfer: a connected socket
    (passive) or a listening one (active)."""
    fam = c.sock.family
    if mode in ("pasv", "epsv"):
        reply = c.expect(c.cmd(mode.upper()), "22", mode)
        if mode == "pasv":
            nums = reply[reply.index("(") + 1 : reply.index(")")].split(",")
            port = int(nums[4]) * 256 + int(nums[5])
        else:
            port = int(reply.split("|")[3])
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            s.connect((c.host, port))
        except OSError as e:
            s.close()
            raise Failed(f"data-connect-{mode}: {type(e).__name__}")
        return s, None
    listener = socket.socket(fam, socket.SOCK_STREAM)
    listener.settimeout(TIMEOUT)
    local = c.sock.getsockname()[0]
    listener.bind((local, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    if mode == "port":
        arg = local.replace(".", ",") + f",{port >> 8},{port & 255}"
        c.expect(c.cmd(f"PORT {arg}"), "2", mode)
    else:
        af = 2 if fam == socket.AF_INET6 else 1
        c.expect(c.cmd(f"EPRT |{af}|{local}|{port}|"), "2", mode)
    return None, listener


def accept(listener, mode):
    try:
        s, _ = listener.accept()
    except OSError as e:
        raise Failed(f"data-accept-{mode}: {type(e).__name__}")
    finally:
        listener.close()
    s.settimeout(TIMEOUT)
    return s


def transfer(c, mode, verb, path, payload=None):
    conn, listener = data_socket(c, mode)
    reply = c.cmd(f"{verb} {path}")
    if not reply.startswith("1"):
        for s in (conn, listener):
            if s:
                s.close()
        c.expect(reply, "1", f"{verb.lower()}-{mode}")
    if listener:
        conn = accept(listener, mode)
    digest, size = hashlib.sha256(), 0
    try:
        if payload is None:
            while chunk := conn.recv(65536):
                digest.update(chunk)
                size += len(chunk)
        else:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
    except OSError as e:
        raise Failed(f"data-{verb.lower()}-{mode}: {type(e).__name__}")
    finally:
        conn.close()
    c.expect(c.reply(), "2", f"{verb.lower()}-{mode}-final")
    return digest.hexdigest(), size


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempted = self.completed = 0
        self.failed = {}

    def add(self, cause=None):
        with self.lock:
            self.attempted += 1
            if cause is None:
                self.completed += 1
            else:
                self.failed[cause] = self.failed.get(cause, 0) + 1


def worker(n, deadline, tally, want):
    rng = random.Random(n)
    turn = n
    while time.monotonic() < deadline:
        mode, host = MODES[turn % len(MODES)]
        turn += 1
        try:
            c = Control(host)
            c.login()
        except Failed as e:
            tally.add(str(e))
            continue
        try:
            for i in range(5):
                mode = MODES[(turn + i) % len(MODES)][0]
                if host == V6:
                    # PASV and PORT carry IPv4 addresses only.
                    mode = {"pasv": "epsv", "port": "eprt"}.get(mode, mode)
                kind = rng.choice(["small", "one", "up"])
                if kind == "small":
                    _, size = transfer(c, mode, "RETR", "small.bin")
                    if size != 4096:
                        raise Failed(f"short-small-{mode}")
                elif kind == "one":
                    digest, _ = transfer(c, mode, "RETR", "one.bin")
                    if digest != want:
                        raise Failed(f"corrupt-one-{mode}")
                else:
                    name = f"pub/u{RUN}-{n}-{turn}-{i}.bin"
                    transfer(c, mode, "STOR", name, os.urandom(65536))
                    size = c.expect(c.cmd(f"SIZE {name}"), "213", "size")
                    if size.split()[1] != "65536":
                        raise Failed(f"short-upload-{mode}")
                tally.add()
        except Failed as e:
            tally.add(str(e))
        finally:
            c.close()


def burst(count):
    """`count` control connections opened at once; how many were greeted, how long the
    slowest took, and the greeting failures by cause."""
    results = []
    lock = threading.Lock()

    def one():
        start = time.monotonic()
        try:
            c = Control(V4)
            c.close()
            outcome = None
        except Failed as e:
            outcome = str(e)
        with lock:
            results.append((outcome, time.monotonic() - start))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = {}
    for outcome, _ in results:
        if outcome:
            failed[outcome] = failed.get(outcome, 0) + 1
    return {
        "greeted": sum(1 for o, _ in results if o is None),
        "slowest_s": round(max(d for _, d in results), 2),
        "failed": failed,
    }


def silent_client(seconds):
    s = socket.create_connection((V4, 21), timeout=TIMEOUT)
    greeting = s.recv(512)
    time.sleep(seconds)
    s.close()
    return {"greeted": greeting.startswith(b"220")}


def data_reset():
    c = Control(V4)
    c.login()
    conn, _ = data_socket(c, "epsv")
    c.expect(c.cmd("RETR one.bin"), "1", "reset-retr")
    conn.recv(65536)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    final = c.reply()
    noop = c.cmd("NOOP")
    c.close()
    return {"final": final[:3], "then": noop[:3]}


def bounce():
    c = Control(V4)
    c.login()
    refused = c.cmd("PORT " + THIRD.replace(".", ",") + ",4,1")
    c.close()
    return {"reply": refused[:3]}


def main():
    seconds, clients, want = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    deadline = time.monotonic() + seconds
    tally = Tally()
    workers = [
        threading.Thread(target=worker, args=(n, deadline, tally, want)) for n in range(clients)
    ]
    for t in workers:
        t.start()
    faults = {}

    def fault(name, at, run):
        time.sleep(at)
        try:
            faults[name] = run()
        except Failed as e:
            faults[name] = {"failed": str(e)}

    plan = [
        ("silent_client", seconds * 0.1, lambda: silent_client(20)),
        ("bounce", seconds * 0.2, bounce),
        ("burst", seconds * 0.4, lambda: burst(200)),
        ("data_reset", seconds * 0.6, data_reset),
    ]
    helpers = [threading.Thread(target=fault, args=p) for p in plan]
    for t in helpers:
        t.start()
    for t in workers + helpers:
        t.join()
    print(
        json.dumps(
            {
                "attempted": tally.attempted,
                "completed": tally.completed,
                "failed": tally.failed,
                "faults": faults,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
