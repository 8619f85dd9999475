#!/usr/bin/env python3
"""Scripted clients and probes for the transparent-edge tests, run inside a network
namespace with `ip netns exec`. Each prints what it saw; the Rust test asserts.

  edge_client.py steal SERVER FILE THIEF_SOURCE
      Logs in, asks EPSV, lets a second host (THIEF_SOURCE) race for the data port,
      then downloads FILE on it. Prints "thief: <bytes>" and "client: <bytes> <reply>".
  edge_client.py twice SERVER FILE
      Logs in, asks EPSV, connects to the data port, then tries a second connection
      to it (2 s); downloads FILE on the first. Prints "second: <connect result>"
      and "client: <bytes> <reply>".
  edge_client.py bounce SERVER THIRD_HOST THIRD_PORT
      Logs in and sends PORT naming THIRD_HOST:THIRD_PORT, then LIST. Prints replies.
  edge_client.py active SERVER FILE
      Logs in, downloads FILE in active mode (PORT, or EPRT over IPv6), and prints
      "data from <peer address> <bytes>" and the final reply code.
  edge_client.py probe ADDR PORT
      Listens on ADDR:PORT, prints "ready", waits for a line on stdin, then reports
      "connected <peer>" or "nothing" without waiting.
  edge_client.py connect ADDR PORT SECONDS
      Tries to connect; prints "connected", "refused" or "timeout".
"""
import socket
import sys


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Control:
    def __init__(self, host):
        self.host = host
        self.sock = socket.create_connection((host, 21), timeout=20)
        self.file = self.sock.makefile("rb")
        self.reply()

    def reply(self):
        line = self.file.readline().decode()
        text = line
        if len(line) > 3 and line[3] == "-":
            while not (line[:3] == text[:3] and line[3:4] == " "):
                line = self.file.readline().decode()
                text += line
        return text.strip()

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def login(self):
        self.cmd("USER anonymous")
        self.cmd("PASS edge@")
        self.cmd("TYPE I")


def steal(server, path, thief_source):
    c = Control(server)
    c.login()
    reply = c.cmd("EPSV")
    port = int(reply.split("|||")[1].split("|")[0])
    thief = socket.socket(family(server), socket.SOCK_STREAM)
    thief.bind((thief_source, 0))
    thief.settimeout(10)
    stolen = b""
    try:
        thief.connect((server, port))
        while True:
            chunk = thief.recv(65536)
            if not chunk:
                break
            stolen += chunk
    except OSError:
        pass
    print("thief:", len(stolen))
    data = socket.create_connection((server, port), timeout=20)
    retrieve(c, data, path)


def retrieve(c, data, path):
    """Downloads PATH on the connected data socket; prints the bytes and the reply."""
    c.sock.sendall(("RETR " + path + "\r\n").encode())
    c.reply()
    got = 0
    while True:
        chunk = data.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    data.close()
    print("client:", got, c.reply()[:3])


def twice(server, path):
    c = Control(server)
    c.login()
    reply = c.cmd("EPSV")
    port = int(reply.split("|||")[1].split("|")[0])
    data = socket.create_connection((server, port), timeout=20)
    print("second:", attempt(server, port, 2))
    retrieve(c, data, path)


def attempt(addr, port, seconds):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(float(seconds))
    try:
        s.connect((addr, int(port)))
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    finally:
        s.close()


def bounce(server, third, port):
    c = Control(server)
    c.login()
    p = int(port)
    octets = third.replace(".", ",")
    print("PORT:", c.cmd("PORT %s,%d,%d" % (octets, p >> 8, p & 0xFF)))
    print("EPRT:", c.cmd("EPRT |1|%s|%d|" % (third, p)))
    print("LIST:", c.cmd("LIST"))


def active(server, path):
    c = Control(server)
    c.login()
    fam = family(server)
    listener = socket.socket(fam, socket.SOCK_STREAM)
    listener.bind((c.sock.getsockname()[0], 0))
    listener.listen(1)
    listener.settimeout(20)
    host, port = listener.getsockname()[:2]
    if fam == socket.AF_INET:
        cmd = "PORT %s,%d,%d" % (host.replace(".", ","), port >> 8, port & 0xFF)
    else:
        cmd = "EPRT |2|%s|%d|" % (host, port)
    print("PORT:", c.cmd(cmd)[:3])
    c.sock.sendall(("RETR " + path + "\r\n").encode())
    c.reply()
    conn, peer = listener.accept()
    got = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    print("data from", peer[0], got)
    print("reply:", c.reply()[:3])


def probe(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, int(port)))
    s.listen(8)
    print("ready", flush=True)
    sys.stdin.readline()
    s.setblocking(False)
    try:
        conn, peer = s.accept()
        print("connected", peer[0], flush=True)
    except BlockingIOError:
        print("nothing", flush=True)


def connect(addr, port, seconds):
    print(attempt(addr, port, seconds))


if __name__ == "__main__":
    scenarios = {"steal": steal, "bounce": bounce, "active": active, "probe": probe, "connect": connect,
                 "twice": twice}
    scenarios[sys.argv[1]](*sys.argv[2:])
