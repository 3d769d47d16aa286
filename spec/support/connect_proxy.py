#!/usr/bin/env python3
"""A tiny HTTP proxy on 127.0.0.1 for spec/integration/cosocket_proxy_spec.lua.

    connect_proxy.py PORT LOGFILE [MODE]

CONNECT host:port opens a tunnel (MODE "deny": answers 407 instead); an absolute-form
request (GET http://host:port/path) is forwarded to host:port in origin form, one
request per connection. Every request line is appended to LOGFILE. Loopback only:
any target that is not 127.0.0.1/localhost is refused with 403."""
import socket
import sys
import threading

PORT, LOG, MODE = int(sys.argv[1]), sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "ok")
LOCAL = ("127.0.0.1", "localhost")


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 1 << 20:
            return None, b""
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(conn):
    try:
        head, rest = read_head(conn)
        if head is None:
            return
        lines = head.split("\r\n")
        log(lines[0])
        method, target, _ = lines[0].split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            if MODE == "deny":
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Proxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n")
                return
            if host not in LOCAL:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            up = socket.create_connection(("127.0.0.1", int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                up.sendall(rest)
            t = threading.Thread(target=pipe, args=(up, conn), daemon=True)
            t.start()
            pipe(conn, up)
            t.join(5)
            return
        # absolute form: http://host:port/path
        assert target.startswith("http://")
        hostport, _, path = target[7:].partition("/")
        host, _, port = hostport.partition(":")
        if host not in LOCAL:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        up = socket.create_connection(("127.0.0.1", int(port or 80)))
        out = [method + " /" + path + " HTTP/1.1"]
        for h in lines[1:]:
            if not h.lower().startswith("connection:"):
                out.append(h)
        out.append("Connection: close")
        up.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + rest)
        while True:
            d = up.recv(65536)
            if not d:
                break
            conn.sendall(d)
        up.close()
    except Exception as e:  # noqa: BLE001 - a test helper: log and drop the connection
        log("error: %r" % (e,))
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PORT))
    srv.listen(64)
    log("listening")
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


main()
