#!/usr/bin/env python3
"""A Python ftplib client for the integration tests, with every data mode forced.

usage: ftp_client.py HOST PORT MODE ACTION REMOTE [LOCAL]
  MODE   pasv | epsv | port | eprt
  ACTION get (REMOTE -> LOCAL) | put (LOCAL -> REMOTE) | list (REMOTE dir to stdout)
"""
import ftplib
import socket
import sys


class Client(ftplib.FTP):
    mode = "pasv"

    def makepasv(self):
        # ftplib picks PASV on IPv4 and EPSV on IPv6; the tests force either.
        if self.mode == "epsv":
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return super().makepasv()

    def makeport(self):
        if self.mode != "eprt":
            return super().makeport()
        sock = socket.create_server(("", 0), family=self.af, backlog=1)
        sock.settimeout(self.timeout)
        self.sendeprt(self.sock.getsockname()[0], sock.getsockname()[1])
        return sock


def main():
    host, port, mode, action, remote = sys.argv[1:6]
    local = sys.argv[6] if len(sys.argv) > 6 else None
    ftp = Client(timeout=60)
    ftp.mode = mode
    ftp.connect(host, int(port))
    ftp.login()
    ftp.set_pasv(mode in ("pasv", "epsv"))
    if action == "get":
        with open(local, "wb") as f:
            ftp.retrbinary("RETR " + remote, f.write, blocksize=65536)
    elif action == "put":
        with open(local, "rb") as f:
            ftp.storbinary("STOR " + remote, f, blocksize=65536)
    elif action == "list":
        ftp.retrlines("LIST " + remote)
    else:
        sys.exit("unknown action " + action)
    ftp.quit()


if __name__ == "__main__":
    main()
