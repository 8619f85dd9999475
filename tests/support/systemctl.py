#!/usr/bin/env python3
"""A stand-in for systemctl where no systemd runs (CI machines, network namespaces):
the guides' `systemctl` lines are run as written, and this carries out what systemd
would from the installed unit files, drop-ins included: ExecStartPre, ExecStart
(in the background, its pid kept in $SYSTEMCTL_STATE, unless Type=oneshot),
ExecReload with $MAINPID, ExecStop, `kill --signal=`, and for Type=notify it waits for READY=1 on a
NOTIFY_SOCKET of its own, as systemd does before `start` returns. Users,
capabilities and sandboxing are not applied: the tests run as root."""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

UNIT_DIRS = [d for d in os.environ.get("SYSTEMCTL_UNIT_PATH", "").split(":") if d] + [
    "/etc/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system",
    "/usr/lib/systemd/system"]
STATE = os.environ.get("SYSTEMCTL_STATE", "/run/systemctl-shim")


def unit_files(name):
    if "." not in name:
        name += ".service"
    main = next((os.path.join(d, name) for d in UNIT_DIRS if os.path.exists(os.path.join(d, name))), None)
    if main is None:
        sys.exit(f"systemctl: Unit {name} not found.")
    files = [main]
    for d in UNIT_DIRS:
        drop = os.path.join(d, name + ".d")
        if os.path.isdir(drop):
            files += sorted(os.path.join(drop, f) for f in os.listdir(drop) if f.endswith(".conf"))
    return name, files


def parse(files):
    unit = {}
    for path in files:
        section = None
        with open(path) as f:
            for raw in f:
                line = raw.strip()
                if not line or line.startswith(("#", ";")):
                    continue
                if line.startswith("["):
                    section = line.strip("[]")
                    continue
                key, _, value = line.partition("=")
                key, value = key.strip(), value.strip()
                if section == "Service" and key.startswith("Exec"):
                    unit.setdefault(key, []).append(value)
                elif section == "Service":
                    unit[key] = value
    return unit


def command(line, env):
    line = line.lstrip("-@+!:")
    for key, value in env.items():
        line = line.replace("$" + key, value).replace("${%s}" % key, value)
    return shlex.split(line)


def pidfile(name):
    return os.path.join(STATE, name + ".pid")


def main_pid(name):
    try:
        with open(pidfile(name)) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start(name):
    name, files = unit_files(name)
    unit = parse(files)
    if main_pid(name):
        return
    for line in unit.get("ExecStartPre", []):
        subprocess.run(command(line, {}), check=True)
    kind = unit.get("Type", "simple")
    if kind == "oneshot":
        for line in unit.get("ExecStart", []):
            subprocess.run(command(line, {}), check=True)
        open(pidfile(name) + ".active", "w").close()
        return
    env = dict(os.environ)
    notify = None
    if kind == "notify":
        path = os.path.join(STATE, name + ".notify")
        if os.path.exists(path):
            os.unlink(path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(path)
        env["NOTIFY_SOCKET"] = path
    log = open(os.path.join(STATE, name + ".log"), "ab")
    child = subprocess.Popen(command(unit["ExecStart"][-1], {}), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
    with open(pidfile(name), "w") as f:
        f.write(str(child.pid))
    if notify is None:
        return
    notify.settimeout(0.5)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"systemctl: {name} exited with {child.returncode} before it was ready")
        try:
            message = notify.recv(4096).decode()
        except socket.timeout:
            continue
        record(name, message)
        if "READY=1" in message.split("\n"):
            keep_listening(name, notify, child.pid)
            return
    sys.exit(f"systemctl: {name} did not report READY=1")


def record(name, message):
    with open(os.path.join(STATE, name + ".notify.log"), "a") as f:
        f.write(message.rstrip("\n") + "\n")


def keep_listening(name, notify, pid):
    """As systemd does, go on reading the service's notifications (RELOADING=1,
    STOPPING=1...) for as long as it runs, in a process of our own."""
    if os.fork() != 0:
        return
    os.setsid()
    # Let go of the caller's pipes, as a daemon does: whoever reads them waits for EOF.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    notify.settimeout(0.5)
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(0)
        try:
            record(name, notify.recv(4096).decode())
        except socket.timeout:
            continue


def stop(name):
    name, files = unit_files(name)
    unit = parse(files)
    pid = main_pid(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(600):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        os.unlink(pidfile(name))
    if os.path.exists(pidfile(name) + ".active"):
        for line in unit.get("ExecStop", []):
            subprocess.run(command(line, {}), check=True)
        os.unlink(pidfile(name) + ".active")


def reload(name):
    name, files = unit_files(name)
    unit = parse(files)
    env = {"MAINPID": str(main_pid(name) or "")}
    for line in unit.get("ExecReload", []):
        subprocess.run(command(line, env), check=True)


def kill(name, sig):
    name, _ = unit_files(name)
    pid = main_pid(name)
    if pid:
        os.kill(pid, getattr(signal, "SIG" + sig.removeprefix("SIG")))


def main(args):
    os.makedirs(STATE, exist_ok=True)
    args = [a for a in args if a not in ("--quiet", "-q", "--no-block")]
    if not args:
        sys.exit("usage: systemctl VERB [UNIT...]")
    verb, rest = args[0], args[1:]
    now = "--now" in rest
    units = [u for u in rest if not u.startswith("-")]
    if verb == "daemon-reload":
        return
    if verb == "enable":
        for u in units:
            unit_files(u)
            if now:
                start(u)
    elif verb == "start":
        for u in units:
            start(u)
    elif verb == "stop":
        for u in units:
            stop(u)
    elif verb == "restart":
        for u in units:
            stop(u)
            start(u)
    elif verb == "reload":
        for u in units:
            reload(u)
    elif verb == "kill":
        sig = next((a.split("=", 1)[1] for a in rest if a.startswith("--signal=")), "TERM")
        if "-s" in rest:
            sig = rest[rest.index("-s") + 1]
            units = [u for u in units if u != sig]
        for u in units:
            kill(u, sig)
    elif verb == "is-active":
        ok = all(main_pid(unit_files(u)[0]) or os.path.exists(pidfile(unit_files(u)[0]) + ".active")
                 for u in units)
        print("active" if ok else "inactive")
        sys.exit(0 if ok else 3)
    else:
        sys.exit(f"systemctl (test stand-in): {verb} is not supported")


if __name__ == "__main__":
    main(sys.argv[1:])
