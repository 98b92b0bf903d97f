#!/usr/bin/python3
"""A netcat-like chat client for the systemd end-to-end test (runs inside the container).

chatclient.py PORT NICK OUTFILE [--send LINE]... [--hold SECS]
Connects to 127.0.0.1:PORT, sends NICK and each --send line, then records every received line to
OUTFILE (flushed per line) until the server closes the connection or SECS pass. Exit status 0 when
the server closed the connection, 3 when the time ran out.
"""
import socket
import sys
import time


def main() -> int:
    port, nick, outfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sends, hold, args = [], 10.0, sys.argv[4:]
    while args:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--send":
            sends.append(value)
        elif flag == "--hold":
            hold = float(value)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall((nick + "\n").encode())
    for line in sends:
        sock.sendall((line + "\n").encode())
    deadline = time.monotonic() + hold
    buf = b""
    with open(outfile, "w", encoding="utf-8") as out:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return 3
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return 3
            except ConnectionError:
                chunk = b""
            if not chunk:
                if buf:
                    out.write(buf.decode("utf-8", "replace") + "\n")
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                out.write(line.rstrip(b"\r").decode("utf-8", "replace") + "\n")
                out.flush()


if __name__ == "__main__":
    sys.exit(main())
