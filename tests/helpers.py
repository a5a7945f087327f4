"""What many test modules use: where things are, the CLI run as a user runs it, and
the one-line error a failed command must end with."""

import json
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from click.testing import CliRunner

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED = REPO.parent / "shared"
HAM10000 = SHARED / "data" / "ham10000"


def run(*args, env=None, catch_exceptions=False):
    """``skinfeat ARGS...`` through click's runner (arguments made strings); output is
    stdout and stderr together."""
    from skinfeat.cli import cli

    return CliRunner(env=env).invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)


def error_line(result, code=1, alone=False):
    """The ``Error:`` line a failed command ends with: exit ``code``, no traceback, no
    numpy advice, exactly one ``Error:`` line; with ``alone``, nothing else printed
    (exit 2 keeps click's usage lines)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "allow_pickle" not in result.output, result.output
    assert lines and lines[-1].startswith("Error: "), result.output
    assert sum(line.startswith("Error: ") for line in lines) == 1, result.output
    assert not alone or code == 2 or len(lines) == 1, result.output
    return lines[-1]


class Server:
    """``skinfeat.apps.serve``'s app on waitress on a free port, in a thread."""

    def __init__(self, model, **options):
        from skinfeat.apps.serve import create_server, make_app

        self.app = make_app(model, **options)
        self.server = create_server(self.app, port=0, workers=options.get("workers", 4))
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        """waitress's loop, stopped between polls (closing it from another thread would race)."""
        while not self.stopping.is_set():
            self.server.asyncore.loop(timeout=0.05, map=self.server._map, count=1)
        self.server.asyncore.close_all(self.server._map)
        self.server.task_dispatcher.shutdown()

    def call(self, path, data=None, content_type=None, method=None):
        """(status, parsed JSON or text, headers)."""
        headers = {"Content-Type": content_type} if content_type else {}
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                status, body, got = answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as exc:
            status, body, got = exc.code, exc.read(), exc.headers
        text = body.decode()
        return status, json.loads(text) if got.get("Content-Type") == "application/json" else text, got

    def predict(self, data, fields=None, name="lesion.jpg", field="image", query=""):
        """POST /predict as a multipart form (``field`` holding ``data``) plus ``fields``."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in (fields or {}).items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     f'Content-Type: image/jpeg\r\n\r\n'.encode() + data + b"\r\n")
        return self.call("/predict" + query, b"".join(parts) + f"--{boundary}--\r\n".encode(),
                         f"multipart/form-data; boundary={boundary}")

    def close(self):
        self.stopping.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
