"""Headless Chromium driven through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: no port, no websocket library), networking off
except 127.0.0.1, and a folder served there (``Served``: browsers run no Wasm
from file://). For the tests and benchmark of the page ``skinfeat export
--format web`` writes (``skinfeat.apps.web.site``)."""

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
          "--disable-background-networking", "--disable-sync", "--disable-component-update",
          "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=127.0.0.1:9",
          "--proxy-bypass-list=127.0.0.1")


def chromium():
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _as_fds_3_4(read, write):
    """In the child: ``read`` as fd 3, ``write`` as fd 4 (copied above both first)."""
    read, write = fcntl.fcntl(read, fcntl.F_DUPFD, 10), fcntl.fcntl(write, fcntl.F_DUPFD, 10)
    os.dup2(read, 3), os.dup2(write, 4)


class Browser:
    """One headless Chromium and one page: ``evaluate(expression)`` awaits the
    expression's promise in the page and returns its JSON value."""

    def __init__(self, executable=None):
        self._profile = tempfile.mkdtemp(prefix="skinfeat-chromium.")
        ours_r, chrome_w = os.pipe()  # Chromium writes fd 4
        chrome_r, ours_w = os.pipe()  # and reads fd 3
        self._proc = subprocess.Popen(
            [executable or chromium(), *_FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=lambda: _as_fds_3_4(chrome_r, chrome_w))
        os.close(chrome_r), os.close(chrome_w)
        self._out, self._in = os.fdopen(ours_w, "wb"), os.fdopen(ours_r, "rb")
        self._id, self._buffer = 0, b""
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def send(self, method, session=None, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        self._out.flush()
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", self._session, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def goto(self, url):
        """Open ``url`` and wait for its load event."""
        self.send("Page.navigate", self._session, url=url)
        self.evaluate("new Promise(r => document.readyState === 'complete' ? r() : "
                      "addEventListener('load', () => r(), {once: true}))")

    def close(self):
        self._proc.kill()
        self._proc.wait()
        self._out.close(), self._in.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Served:
    """A folder served over http on 127.0.0.1 (a free port) in a thread, recording
    every path asked for in ``asked``; ``url`` ends with a slash."""

    def __init__(self, root):
        self.asked = []
        asked = self.asked

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                asked.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
