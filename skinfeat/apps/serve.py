"""``skinfeat serve``: a fitted model behind an HTTP API and a small page.

    from skinfeat.apps.serve import make_app, serve
    app = make_app("models/x")          # a WSGI application
    serve("models/x", port=8000)        # the same app on waitress, until stopped

Routes (every answer but the page is JSON; errors are ``{"error": message}``):

- ``GET /``: a page to upload an image and see the top 3 classes;
- ``POST /predict``: the image as the multipart field ``image`` or as the raw
  request body; a model fitted with metadata also takes ``age``, ``sex`` and
  ``localization`` (form fields or query parameters); ``?top_k=N``. The answer is
  one item of ``skinfeat predict --format json``, computed the same way
  (``skinfeat.model.predict.predict_image``);
- ``GET /health``; ``GET /model``: the head, backbone, classes and training summary.

The TFLite interpreter is not thread-safe: each request borrows one of
``workers`` loaded copies of the model (as many as the server's threads), so
requests never share one and never wait for each other's copy (one copy behind
a lock, i.e. ``--workers 1``, measured 17 req/s and p95 885 ms with 8 clients
against 21 req/s and 618 ms for 4 copies, EfficientNet-Lite0, 2 busy cores).

Why waitress: prediction is blocking CPU work, which a threaded WSGI server runs
directly; Starlette + uvicorn must hand it to a thread pool and took four more
packages (python-multipart, anyio, h11, starlette). Measured on the same model
and load, throughput was the same (about 20 req/s, CPU-bound) and waitress's p95
with 8 clients lower (670-750 ms against 875-990 ms). Multipart bodies are parsed
with the standard library's ``email`` parser (binary-safe: tests/test_serve.py).
"""

import email.parser
import email.policy
import json
import queue
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs

from skinfeat.core.classes import CLASSES, FULL_NAMES
from skinfeat.core.errors import DataError, SkinfeatError, UsageError
from skinfeat.core.ood import ood_line
from skinfeat.core.operating import point_line
from skinfeat.imaging.images import FORMATS, FileError
from skinfeat.imaging.tta import TTA_SETS
from skinfeat.model.ensemble_dir import load_any
from skinfeat.model.predict import predict_image, prediction_item

MAX_UPLOAD_MB = 20
DEFAULT_WORKERS = 4
STATUS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 405: "405 Method Not Allowed",
          413: "413 Content Too Large", 500: "500 Internal Server Error"}


class HTTPError(Exception):
    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.headers = status, list(headers)


# ----------------------------------------------------------------------------- the models

class ModelPool:
    """``workers`` copies of the model in ``directory`` (the first checks the file
    hashes; a broken directory is a ModelError here, before serving); ``borrowed()``
    lends one to a single request at a time."""

    def __init__(self, directory, workers=DEFAULT_WORKERS):
        self.directory = Path(directory)
        self.first = load_any(directory)
        self._free = queue.LifoQueue()
        self._free.put(self.first)
        for _ in range(workers - 1):
            self._free.put(load_any(directory, verify_hash=False))

    @contextmanager
    def borrowed(self):
        model = self._free.get()
        try:
            yield model
        finally:
            self._free.put(model)


def model_summary(model, tta):
    """What ``GET /model`` says: the model's kind, head, backbone, classes, metadata columns."""
    manifest = model.manifest
    backbone = manifest.get("backbone") or {}
    training = manifest.get("training") or {}
    summary = {"directory": str(model.directory), "kind": "ensemble" if "members" in manifest else "model",
               "head": manifest.get("head") or manifest.get("method"),
               "classes": [{"class": c, "name": FULL_NAMES[c]} for c in CLASSES],
               "metadata": list(model.metadata["columns"]) if model.metadata else [],
               "metadata_optional": bool(model.metadata) and model.fallback is not None,
               "operating_point": _point(getattr(model, "operating_point", None)),
               "ood": _ood(getattr(model, "ood", None)),
               "tta": tta, "skinfeat_version": manifest.get("skinfeat_version"), "created": manifest.get("created")}
    if "members" in manifest:
        summary["members"] = [{"dir": m.get("dir"), "run_id": m.get("run_id")} for m in manifest["members"]]
    else:
        summary["backbone"] = {k: backbone.get(k) for k in ("module", "input_size", "resize", "feature_dim",
                                                             "views", "augment")}
        interval = (training.get("cv_intervals") or {}).get("bmca") or {}
        worst = (training.get("shift") or {}).get("worst") or {}
        summary["training"] = {"run_id": training.get("run_id"), "n_images": training.get("n_images"),
                               "cv_bmca": _rounded((training.get("cv_bmca") or {}).get("mean")),
                               "cv_bmca_interval": [_rounded(interval.get("low")), _rounded(interval.get("high"))]
                               if interval else None,
                               "worst_shift": {"bmca": _rounded(worst.get("bmca")), "shift": worst.get("bmca_shift")}
                               if worst else None}
    return summary


# ----------------------------------------------------------------------------- requests

def read_body(environ, limit):
    """The request body, at most ``limit`` bytes (413 beyond)."""
    too_large = f"more than the {limit:,} bytes this server takes; expected one image: downscale it, " \
                "or start the server with a larger --max-upload-mb"
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HTTPError(400, f"the Content-Length header {environ.get('CONTENT_LENGTH')!r} is not a number; "
                             "expected the body's size in bytes") from None
    if length > limit:
        raise HTTPError(413, f"the request body is {length:,} bytes, {too_large}")
    body = environ["wsgi.input"].read(length) if length else b""
    if len(body) < length:
        raise HTTPError(400, f"the request body ended after {len(body):,} of its {length:,} bytes; send it whole")
    return body


def _multipart(content_type, body):
    """{field: (file name or None, bytes)} of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise HTTPError(400, "the multipart/form-data body has no parts (no boundary?); expected a form "
                             "with the image in the field 'image'")
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def upload(environ, body):
    """(image bytes, its name for messages, {field: text}) of a POST /predict: the
    multipart field ``image``, or the raw body; the other fields and the query string."""
    fields = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
    content_type = environ.get("CONTENT_TYPE", "")
    if content_type.lower().startswith("multipart/form-data"):
        form = _multipart(content_type, body)
        fields.update({k: (v or b"").decode("utf-8", "replace") for k, (name, v) in form.items()
                       if k != "image" and name is None})
        if "image" not in form:
            got = ", ".join(repr(k) for k in form) or "none"
            raise HTTPError(400, f"the form has no field 'image' (its fields: {got}); expected the image file "
                                 "in a field named image, or the image bytes as the request body")
        name, data = form["image"]
        return data or b"", f"upload {name!r}" if name else "the form field 'image'", fields
    if not body:
        raise HTTPError(400, "the request body is empty; expected an image: the multipart form field 'image' "
                             "or the image bytes as the body")
    return body, "the request body", fields


def metadata_fields(model, fields):
    """{column: [value]} for a model fitted with metadata (400 when a column is not sent,
    unless none is and the model holds an image-only fallback), else None."""
    if not model.metadata:
        return None
    columns = model.metadata["columns"]
    missing = [c for c in columns if c not in fields]
    if model.fallback is not None and all(str(fields.get(c, "")).strip().lower() in ("", "unknown") for c in columns):
        return None  # nothing known but the image: its fallback answers
    if missing:
        raise HTTPError(400, f"model {model.directory.name} was fitted with metadata ({', '.join(columns)}) and "
                             f"the request has no {', '.join(missing)}; send them as form fields or query "
                             "parameters (an empty value or 'unknown' when not known)")
    return {c: [fields[c]] for c in columns}


def _top_k(fields):
    text = fields.pop("top_k", "3")
    if not text.isdigit() or not 1 <= int(text) <= len(CLASSES):
        raise HTTPError(400, f"top_k {text!r} is not a number from 1 to {len(CLASSES)}; expected e.g. top_k=3")
    return int(text)


# ----------------------------------------------------------------------------- the application

class App:
    """The WSGI application (see the module's docstring)."""

    def __init__(self, pool, tta="none", max_upload=MAX_UPLOAD_MB * 2**20, access_log=None):
        check_tta(tta)
        self.pool, self.tta, self.max_upload = pool, tta, max_upload
        self.access_log = access_log  # called with one line per request (serve: stderr)
        self.summary = model_summary(pool.first, tta)
        self.routes = {"/": ("GET", self.page), "/health": ("GET", self.health), "/model": ("GET", self.model),
                       "/predict": ("POST", self.predict)}

    def __call__(self, environ, start_response):
        headers, start, error = [], time.perf_counter(), None
        try:
            status, content_type, body = self.route(environ)
        except HTTPError as exc:
            status, content_type, body, headers = exc.status, "application/json", _error(exc), exc.headers
            error = str(exc)
        except SkinfeatError as exc:  # the image or its metadata cannot be used
            status, content_type, body = 400, "application/json", _error(exc)
            error = str(exc)
        except Exception:  # a bug: the client gets a short answer, the log the traceback
            traceback.print_exc(file=sys.stderr)
            status, content_type, body = 500, "application/json", _error("internal error; see the server's log")
            error = "internal error"
        if self.access_log:
            self.access_log(f"{environ.get('REMOTE_ADDR', '-')} {environ.get('REQUEST_METHOD', '-')} "
                            f"{environ.get('PATH_INFO') or '/'} {status} {(time.perf_counter() - start) * 1000:.0f} ms"
                            + (f": {error}" if error else ""))
        start_response(STATUS[status], [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                        *headers])
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    def route(self, environ):
        path, method = environ.get("PATH_INFO") or "/", environ.get("REQUEST_METHOD", "GET")
        if path not in self.routes:
            raise HTTPError(404, f"no such page {path!r}; expected one of {', '.join(self.routes)}")
        allowed, handler = self.routes[path]
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            raise HTTPError(405, f"{method} {path} is not served; expected {allowed} {path}", [("Allow", allowed)])
        return handler(environ)

    def page(self, environ):
        return 200, "text/html; charset=utf-8", PAGE.encode()

    def health(self, environ):
        return 200, "application/json", _json({"status": "ok"})

    def model(self, environ):
        return 200, "application/json", _json(self.summary)

    def predict(self, environ):
        data, name, fields = upload(environ, read_body(environ, self.max_upload))
        top_k = _top_k(fields)
        with self.pool.borrowed() as model:
            metadata = metadata_fields(model, fields)
            answering = model.fallback if model.metadata and metadata is None else model
            try:
                prediction = predict_image(answering, data, tta=self.tta, metadata=metadata)
            except FileError as exc:  # the advice for a file on disk, said for an upload
                advice = f"; expected the bytes of one complete image ({FORMATS})" if exc.advice else ""
                raise DataError(f"{name} {exc.reason}{advice}") from None
            unknown = [c for c, n in model.unknown_metadata(metadata, 1).items() if n] if metadata else []
        item = prediction_item(prediction, top_k)
        del item["image"], item["path"]
        if unknown:  # predicted as a missing value, as `predict` and `evaluate` do
            item["warnings"] = [f"{c} {fields[c]!r} is a category the model never saw in training; "
                                "predicted as unknown" for c in unknown]
        return 200, "application/json", _json(item)


def _point(point):
    """What /model says of the model's operating point (None: it has none)."""
    if point is None:
        return None
    return {"rule": point_line(point), "task": point["task"], "threshold": point["threshold"],
            "sensitivity": point["sensitivity"], "specificity": point["specificity"]}


def _ood(score):
    """What /model says of the model's out-of-distribution score (None: it has none)."""
    if score is None:
        return None
    return {"rule": ood_line(score.about), "threshold": score.threshold,
            "flagged_out_of_fold": score.about.get("flagged_out_of_fold")}


def _rounded(value):
    return None if value is None else round(float(value), 4)


def _json(value):
    return json.dumps(value).encode()


def _error(exc):
    return _json({"error": str(exc)})


def check_tta(tta):
    """UsageError unless ``tta`` is a set of ``skinfeat.imaging.tta.TTA_SETS`` or ``views``."""

    if tta not in (*TTA_SETS, "views"):
        raise UsageError(f"test-time augmentation {tta!r} is unknown; expected one of "
                         f"{', '.join((*TTA_SETS, 'views'))}")


def make_app(directory, workers=DEFAULT_WORKERS, tta="none", max_upload_mb=MAX_UPLOAD_MB, access_log=None):
    check_tta(tta)  # before the models load
    return App(ModelPool(directory, workers), tta, int(max_upload_mb * 2**20), access_log)


def create_server(app, host="127.0.0.1", port=8000, workers=DEFAULT_WORKERS):
    """A waitress server of ``app`` bound to ``host:port`` (``.run()`` serves, ``.close()``
    stops); DataError when the port cannot be had."""
    from waitress.server import create_server as waitress_server

    try:  # the body limit is the app's (a JSON 413); waitress's own is a backstop for chunked bodies
        return waitress_server(app, host=host, port=port, threads=workers, ident="skinfeat",
                               max_request_body_size=2 * app.max_upload + 2**16)
    except OSError as exc:
        raise DataError(f"cannot listen on {host}:{port} ({exc.strerror}); expected a free port: "
                        "pick another with --port, or stop what uses it") from None


def serve(directory, host="127.0.0.1", port=8000, workers=DEFAULT_WORKERS, tta="none",
          max_upload_mb=MAX_UPLOAD_MB, on_ready=None):
    """Serve the model in ``directory`` until interrupted (Ctrl-C, SIGINT or SIGTERM: exit 0);
    ``on_ready(url)`` once listening."""
    import logging
    import signal
    import threading

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 2" whenever requests wait
    if threading.current_thread() is threading.main_thread():
        # A process started in the background by a non-interactive shell inherits SIGINT ignored,
        # so Python installs no KeyboardInterrupt handler: install it, and treat SIGTERM the same.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    app = make_app(directory, workers, tta, max_upload_mb,
                   access_log=lambda line: print(line, file=sys.stderr, flush=True))  # one line per request
    server = create_server(app, host, port, workers)
    if on_ready:
        on_ready(f"http://{f'[{host}]' if ':' in host else host}:{server.effective_port}/")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>skinfeat: classify a dermoscopic image</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}
#note{background:#fff3cd;padding:.6em;border-radius:4px}#meta label{display:block;margin:.3em 0}
img{max-width:100%;max-height:18em;display:block;margin:1em 0}td{padding:.2em .6em}</style></head>
<body><h1>Classify a dermoscopic image</h1>
<p id="note"><b>Not a diagnosis.</b> This is a research model's guess among seven HAM10000 classes.
It can be wrong; only a clinician can diagnose a skin lesion.</p>
<form id="form"><input type="file" name="image" accept="image/*" required>
<div id="meta"></div><button>Predict</button></form>
<img id="preview" alt="" hidden><p id="status"></p><table id="top"></table>
<script>
const form = document.getElementById("form"), status = document.getElementById("status");
fetch("model").then(r => r.json()).then(m => {
  for (const c of m.metadata) {
    const label = document.createElement("label"), input = document.createElement("input");
    label.textContent = c + (m.metadata_optional ? " (optional: leave all empty to classify the image alone) " : " ");
    input.name = c; label.append(input);
    document.getElementById("meta").append(label);
  }
});
form.image.onchange = () => {
  const img = document.getElementById("preview");
  img.src = URL.createObjectURL(form.image.files[0]); img.hidden = false;
};
form.onsubmit = async (e) => {
  e.preventDefault(); status.textContent = "predicting..."; document.getElementById("top").replaceChildren();
  const answer = await fetch("predict", {method: "POST", body: new FormData(form)});
  const body = await answer.json();
  if (!answer.ok) { status.textContent = "Error: " + body.error; return; }
  status.textContent = "Decision: " + body.decision.name + " (" + body.decision["class"] + ")" +
    ("refer" in body ? (body.refer ? "; refer: yes" : "; refer: no") : "") +
    ", not a diagnosis." +
    (body.unusual ? " WARNING: this image is unlike the model's training images; do not trust its classes." : "") +
    " Most probable classes (calibrated probabilities):";
  for (const t of body.top) {
    const row = document.getElementById("top").insertRow();
    row.insertCell().textContent = t.name + " (" + t["class"] + ")";
    row.insertCell().textContent = (100 * t.probability).toFixed(1) + " %";
  }
};
</script></body></html>
"""
