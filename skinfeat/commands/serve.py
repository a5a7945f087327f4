"""``skinfeat serve``: a fitted model behind an HTTP API and a page (``skinfeat.apps.serve``)."""

import click

from skinfeat.apps.serve import DEFAULT_WORKERS, MAX_UPLOAD_MB


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Model (or ensemble) directory written by `skinfeat fit --out DIR`.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default is this machine only (0.0.0.0: every network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--tta", default="none", show_default=True, metavar="SET",
              help="Test-time augmentation, as `skinfeat predict --tta`: none, flips, multiscale or views.")
@click.option("--workers", type=click.IntRange(1, 64), default=DEFAULT_WORKERS, show_default=True,
              help="Requests served at once; each has its own copy of the model.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01, 1024), default=MAX_UPLOAD_MB, show_default=True,
              help="Largest request body accepted (larger: 413).")
def serve(model_dir, host, port, tta, workers, max_upload_mb):
    """Serve a fitted model over HTTP until Ctrl-C.

    \b
    GET  /         a page: upload an image, see the top 3 classes
    POST /predict  the image (multipart field `image`, or the raw body) -> JSON:
                   top 3 and all seven probabilities, as `predict --format json`;
                   a model fitted with metadata also needs age, sex, localization
                   (form fields or query parameters)
    GET  /health   {"status": "ok"}
    GET  /model    head, backbone, classes and training summary

    The answers are a model's guesses, not a diagnosis.
    """
    from skinfeat.apps.serve import serve as run

    run(model_dir, host, port, workers, tta, max_upload_mb,
        on_ready=lambda url: click.echo(f"serving {model_dir} on {url} (Ctrl-C stops)", err=True))
