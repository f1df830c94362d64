"""`efr serve`: a local web page and HTTP API that keep a model loaded.

    efr serve --model runs/NAME/best.keras            # http://127.0.0.1:8000/ ; API docs at /docs
    efr serve --model efrnet --port 8080
    efr serve --model efrnet --host 0.0.0.0 --token "$(openssl rand -hex 16)"

Binds to 127.0.0.1 unless --host says otherwise; any other address needs --token (or
$EFR_SERVE_TOKEN), checked on every request.  Nothing a request sends is written to disk.
Reference: docs/serve.md.
"""

import argparse
import logging
import os

from efr.commands import entry_points
from efr.commands.cli import add_verbose_argument, setup_logging
from efr.io.errors import EFRError
from efr.models.litert import DEFAULT_RUNTIME, RUNTIMES
from efr.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT_MS
from efr.serve.limits import DEFAULT_MAX_IMAGES, DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, MB, Limits

SUMMARY = "a local web page and HTTP API (POST /predict) over a loaded model"
PARSER_KWARGS = {
    "description": "Serve a model: a page at / (drop photos or use the webcam), POST /predict, GET /health, "
    "GET /model and OpenAPI docs at /docs.",
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
}
TOKEN_ENV = "EFR_SERVE_TOKEN"
MIN_TOKEN = 16

log = logging.getLogger("efr.serve")


def add_arguments(parser):
    """serve's options: the one place they are defined."""
    parser.add_argument("--model", required=True,
                        help="a model saved by efe_cnn.py (runs/NAME/best.keras) or a built-in one (efrnet)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but loopback needs --token")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument("--token", default=None,
                        help=f"secret every request must carry (at least {MIN_TOKEN} characters; default: "
                        f"${TOKEN_ENV}); required with a --host other than loopback")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="what runs the classifier: litert, keras, or auto (litert when it gives Keras' outputs)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest request body, in MB (413 above it)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest image, in pixels (width x height; 413 above it)")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                        help="most images in one request (413 above it)")
    parser.add_argument("--max-faces", type=int, default=None, metavar="N",
                        help="keep only the N largest faces of each image")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="most faces the model classifies in one call (requests are batched together)")
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_MAX_WAIT_MS,
                        help="longest a request waits for others to join its batch")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help="most requests waiting for the model; more are answered 503 (retry)")
    parser.add_argument("--workers", type=int, default=None,
                        help="images decoded and searched for faces at once (default: all cores)")
    parser.add_argument("--allow-unfinished", action="store_true",
                        help="serve a model from a run that did not finish (interrupted, killed or failed)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    add_verbose_argument(parser)
    return parser


build_parser, parse_args, main = entry_points(__name__)


def check_args(args):
    """Every mistake in the options, before the model loads; returns (token, Limits)."""
    from efr.serve.app import is_loopback

    if not 0 <= args.port <= 65535:
        raise EFRError(f"--port {args.port}: expected 0 to 65535")
    for name in ("max_upload_mb", "max_pixels", "max_images", "max_batch", "max_queue"):
        if getattr(args, name) <= 0:
            raise EFRError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a positive number")
    if args.max_wait_ms < 0:
        raise EFRError(f"--max-wait-ms {args.max_wait_ms}: expected 0 or more")
    if args.workers is not None and args.workers < 1:
        raise EFRError(f"--workers {args.workers}: expected 1 or more")
    if args.max_faces is not None and args.max_faces < 1:
        raise EFRError(f"--max-faces {args.max_faces}: expected 1 or more")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if token is not None and len(token) < MIN_TOKEN:
        raise EFRError(f"the token is {len(token)} characters long: use at least {MIN_TOKEN} "
                       "(e.g. --token \"$(openssl rand -hex 16)\")")
    if not is_loopback(args.host) and token is None:
        raise EFRError(f"--host {args.host} lets other machines in: give --token (or ${TOKEN_ENV}), "
                       "or keep the default --host 127.0.0.1")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * MB), max_pixels=args.max_pixels,
                    max_images=args.max_images)
    return token, limits


def check_installed():
    """The web stack, or one line saying how to install it."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "python_multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise EFRError(f"efr serve needs {', '.join(missing)}: pip install 'efr[serve]'")


def run_args(args):
    """Load the model and serve it until Ctrl-C."""
    setup_logging(args.quiet, args.verbose)
    token, limits = check_args(args)
    check_installed()
    from efr.predict.predictor import load_predictor
    from efr.serve.app import bound_socket, create_app, uvicorn_server

    try:
        sock = bound_socket(args.host, args.port)  # a port in use is said now, before the model loads
    except OSError as err:
        raise EFRError(f"cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port") from err
    predictor = load_predictor(args.model, allow_unfinished=args.allow_unfinished, runtime=args.runtime,
                               max_faces=args.max_faces)
    if predictor.subject_norm:
        raise EFRError("this model was trained with --subject-norm: it needs many photos of each person at once, "
                       "which a server does not get; serve a model trained without it")
    app = create_app(predictor, limits, token=token, workers=args.workers, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {predictor.model_path} ({predictor.runtime}) on http://{shown}:{port}/  "
          f"(API docs: /docs; stop with Ctrl-C)", flush=True)
    uvicorn_server(app, log_level="warning" if args.quiet else "info").run(sockets=[sock])
    return app
