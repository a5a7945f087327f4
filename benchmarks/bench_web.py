"""Throughput and latency of `skinfeat serve` on localhost.

    python benchmarks/bench_web.py [--model DIR] [--data ../shared/data/ham10000]
                                   [--clients 1,4,8] [--requests 200] [--workers 4]

Without --model it makes bench_predict's default model first (EfficientNet-Lite0
+ logreg on 140 HAM10000 images, about a minute). `bench_server` starts the
server in a new process (`skinfeat serve --workers N`), then for each number of
clients sends --requests POST /predict each (keep-alive connections, multipart
uploads of real HAM10000 JPEGs, cycled), and prints requests/s, p50 and p95
latency, the error count and the ratio of p95 to the 150 ms target. Then a
non-image must get a 4xx and /health must still answer. The machine is shared:
the load average is printed next to the timings, and the clients run on the
same cores as the server.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import ROOT, argument_parser, load_average

P95_TARGET_MS = 150.0


def multipart(data, name="image.jpg"):
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, workers, port):
    """`skinfeat serve` in a new process, once /health answers."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "skinfeat", "serve", "--model", str(model), "--port", str(port),
                             "--workers", str(workers)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {proc.stderr.read()}")
        try:
            if request(port, "GET", "/health")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def request(port, method, path, body=None, content_type=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, {"Content-Type": content_type} if content_type else {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        if own:
            conn.close()


def run_clients(port, uploads, clients, per_client):
    """[latency seconds], errors, wall seconds of ``clients`` threads x ``per_client`` requests."""
    latencies, errors, lock = [], [], threading.Lock()

    def client(index):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for i in range(per_client):
            body, content_type = uploads[(index * per_client + i) % len(uploads)]
            start = time.perf_counter()
            try:
                status, _ = request(port, "POST", "/predict", body, content_type, conn)
            except OSError as exc:
                status = repr(exc)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(time.perf_counter() - start)
            if status != 200:
                with lock:
                    errors.append(status)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def bench_server(model, images, clients=(1, 4, 8), requests=200, workers=4):
    """The server part: throughput and p50/p95 per number of clients, then bad input."""
    uploads = [multipart(Path(p).read_bytes(), Path(p).name) for p in images]
    port = free_port()
    proc = start_server(model, workers, port)
    try:
        print(f"server: {workers} workers, {len(uploads)} distinct JPEGs, {requests} requests per client; {load_average()}")
        run_clients(port, uploads, 1, 5)  # warm-up
        for n in clients:
            latencies, errors, wall = run_clients(port, uploads, n, requests)
            ms = sorted(1000 * x for x in latencies)
            p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
            print(f"  {n} client{'s' * (n > 1)}: {len(ms) / wall:6.1f} req/s, p50 {statistics.median(ms):6.1f} ms, "
                  f"p95 {p95:6.1f} ms ({p95 / P95_TARGET_MS:.2f}x target), {len(errors)} errors; {load_average()}")
        status, body = request(port, "POST", "/predict", b"not an image", "application/octet-stream")
        health = request(port, "GET", "/health")
        print(f"  a non-image: {status} {json.loads(body)['error'][:60]}...; /health after it: {health[0]}")
    finally:
        proc.terminate()
        proc.wait(10)


def main():
    from bench_predict import default_model

    parser = argument_parser(__doc__.splitlines()[0], json_help=None, data_type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--images", type=int, default=50, help="How many distinct images to upload, cycled.")
    args = parser.parse_args()
    images = sorted(args.data.rglob("*.jpg"))[:args.images]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(args.data, Path(tmp))
        bench_server(model, images, tuple(int(c) for c in args.clients.split(",")), args.requests, args.workers)


if __name__ == "__main__":
    main()
