#!/usr/bin/python3
"""A netcat-like chat client for the systemd end-to-end test (runs inside the container).

chatclient.py PORT NICK OUTFILE [--send LINE]... [--input FIFO] [--hold SECS]
Connects to 127.0.0.1:PORT, sends NICK and each --send line, then records every received line to
OUTFILE (flushed per line) until the server closes the connection or SECS pass. With --input, it
also creates the named pipe FIFO and sends every line written to it, for as long as it is connected
(the test types into a connection that stays open). Exit status 0 when the server closed the
connection, 3 when the time ran out.
"""
import os
import selectors
import socket
import sys
import time


def main() -> int:
    port, nick, outfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sends, hold, fifo, args = [], 10.0, None, sys.argv[4:]
    while args:
        flag, value, args = args[0], args[1], args[2:]
        if flag == "--send":
            sends.append(value)
        elif flag == "--hold":
            hold = float(value)
        elif flag == "--input":
            fifo = value
        else:
            sys.exit(f"chatclient.py: unknown option {flag}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall((nick + "\n").encode())
    for line in sends:
        sock.sendall((line + "\n").encode())
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    if fifo is not None:
        os.mkfifo(fifo)
        # Opened for writing too, so the pipe never reports end-of-file between two writers.
        typed = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        sel.register(typed, selectors.EVENT_READ)
    deadline = time.monotonic() + hold
    buf = b""
    with open(outfile, "w", encoding="utf-8") as out:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return 3
            for key, _ in sel.select(left):
                if key.fileobj is not sock:
                    # Whole lines only: the test writes each line with one write(2).
                    sock.sendall(os.read(typed, 65536))
                    continue
                try:
                    chunk = sock.recv(65536)
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
