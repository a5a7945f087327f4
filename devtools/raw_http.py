"""An HTTP POST made by hand on a socket, for what urllib cannot do: an upload cut
off midway, or one sent in slow pieces. Used by the serve tests and bench_serve.py."""

import json
import socket
import time


def raw_post(port, body, declared, pause=0.0, chunks=1, path="/predict"):
    """POST ``body`` to ``path`` on 127.0.0.1:``port`` (``declared`` bytes announced), in
    ``chunks`` with ``pause`` seconds after each. Returns (status, JSON) when the whole
    body was sent; None after hanging up mid-upload (``body`` shorter than ``declared``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  f"Content-Length: {declared}\r\nConnection: close\r\n\r\n".encode())
        step = max(1, len(body) // chunks)
        for start in range(0, len(body), step):
            s.sendall(body[start:start + step])
            time.sleep(pause)
        if len(body) < declared:
            return None
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)
