"""efr serve under load against in-process `efr predict` on the same photos.

    python bench/bench_serve.py                       # 48 photos, 8 clients, the seed CNN at 64 px
    python bench/bench_serve.py --model efrnet --json out.json

Both ways get the same RaFD-sized synthetic photos (bench_predict.py's) and the same loaded model:

* in process: efr.predict.run.predict(predictor, photos) (detection in threads, batches);
* the server: `efr serve` in its own process on loopback (``--in-process-server``: efr.serve.app on a
  thread of this process, where the clients' threads share its interpreter lock), ``--clients`` threads
  each sending one photo per POST /predict (the photo's bytes read once beforehand), every photo
  --passes times.

Reports faces per second both ways and the server's p50/p95 latency of a one-photo request with
``--clients`` clients at once; targets: server / in-process faces per second >= 0.8 and p95 <= 150 ms.
Rounds alternate the two ways; the fastest round of each is kept.  Every request must be answered
200: a lost or failed one is counted and fails the run.  Scratch files: bench/out/serve/ (git-ignored).
"""

import argparse
import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import common  # noqa: E402
import numpy as np  # noqa: E402
from bench_predict import make_model, make_photos  # noqa: E402

P95_GOAL_MS = 150.0
RATIO_GOAL = 0.8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=48, help="photos (one face each)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--passes", type=int, default=2, help="times the server gets each photo in a round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the fastest of each way is kept")
    parser.add_argument("--img-size", type=int, default=64, help="seed CNN input side (bench_predict.py's default)")
    parser.add_argument("--model", default=None, help="an EFR model (or efrnet) instead of the seed CNN")
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "serve"), help="scratch folder")
    parser.add_argument("--in-process-server", action="store_true",
                        help="serve from a thread of this process instead of an `efr serve` process")
    parser.add_argument("--serve-args", default="", help="more `efr serve` options, e.g. \"--workers 4 --max-wait-ms 2\"")
    common.add_json_option(parser)
    return parser.parse_args(argv)


def in_process(predictor, photos):
    from efr.predict.run import predict

    started = time.perf_counter()
    faces = predict(predictor, photos, progress=False).faces
    return faces, time.perf_counter() - started


def through_server(url, bodies, clients):
    """(faces, seconds, latencies of answered requests, failures, transport errors): every body sent once."""
    import httpx

    def client(share):
        faces, latencies, failures, errors = 0, [], 0, 0
        with httpx.Client(base_url=url, timeout=60) as http:
            for name, data in share:
                started = time.perf_counter()
                try:
                    response = http.post("/predict", files=[("files", (name, data, "image/png"))])
                except httpx.HTTPError:
                    failures, errors = failures + 1, errors + 1
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures += 1
                    continue
                faces += sum(len(im["faces"]) for im in response.json()["images"])
        return faces, latencies, failures, errors

    shares = [bodies[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(client, shares))
    seconds = time.perf_counter() - started
    return (sum(p[0] for p in parts), seconds, [lat for p in parts for lat in p[1]], sum(p[2] for p in parts),
            sum(p[3] for p in parts))


@contextlib.contextmanager
def server_process(model_path, log_path, extra=()):
    """`efr serve --model MODEL --port P` as a subprocess; yield its base URL once /health answers."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "efr", "serve", "--model", str(model_path), "--port", str(port),
                                 "--quiet", *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"efr serve ended with status {proc.returncode}; see {log_path}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"efr serve did not answer /health in 180 s; see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv=None):
    args = parse_args(argv)
    from efr.predict.predictor import load_predictor
    from efr.serve.app import create_app, running_server

    out = Path(args.out)
    photos = make_photos(out, args.photos)
    model_path = make_model(args, out)
    predictor = load_predictor(model_path)
    bodies = [(p.name, p.read_bytes()) for p in photos] * args.passes
    load_before = os.getloadavg()[0]
    best_local = best_server = None
    failures, lost = 0, 0
    serving = (running_server(create_app(predictor)) if args.in_process_server
               else server_process(model_path, out / "server.log", args.serve_args.split()))
    with serving as url:
        in_process(predictor, photos[:4])  # warm-up both ways
        through_server(url, bodies[: args.clients], args.clients)
        for _ in range(args.rounds):
            faces, seconds = in_process(predictor, photos)
            if best_local is None or seconds < best_local[1]:
                best_local = (faces, seconds)
            served = through_server(url, bodies, args.clients)
            failures += served[3]
            lost += len(bodies) - len(served[2]) - served[4]  # neither answered nor an error
            if best_server is None or served[1] < best_server[1]:
                best_server = served
    local_rate = best_local[0] / best_local[1]
    server_rate = best_server[0] / best_server[1]
    latencies = np.asarray(best_server[2]) * 1000.0
    p50, p95 = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))
    ratio = server_rate / local_rate
    print(f"{len(photos)} photos, model {model_path.name} ({predictor.runtime}), {args.clients} clients, "
          f"{os.cpu_count()} CPUs, load {load_before:.1f}")
    print(f"in process (efr predict): {local_rate:.1f} faces/s ({best_local[0]} faces in {best_local[1]:.2f} s)")
    print(f"server: {server_rate:.1f} faces/s ({best_server[0]} faces in {best_server[1]:.2f} s, "
          f"{len(latencies)} requests), latency p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    print(f"server / in process: {ratio:.2f} (target >= {RATIO_GOAL}); failed or lost requests: {failures + lost}")
    if args.json:
        common.write_result(args.json, common.result(
            "serve", common.command_line(argv, __file__),
            rows=[common.row("in process: efr predict", round(local_rate, 1), "faces/s", f"{best_local[1]:.2f} s"),
                  common.row("server: faces", round(server_rate, 1), "faces/s",
                             f"{args.clients} clients, {len(latencies)} one-photo requests"),
                  common.row("server: p50 latency", round(p50, 1), "ms"),
                  common.row("server: p95 latency", round(p95, 1), "ms"),
                  common.row("server: failed or lost requests", failures + lost, "")],
            targets=[common.target("serve / in-process predict (faces/s)", round(ratio, 3), RATIO_GOAL, ">=",
                                   f"{server_rate:.1f} vs {local_rate:.1f} faces/s, best of {args.rounds} rounds"),
                     common.target("serve p95 latency, one photo, ms", round(p95, 1), P95_GOAL_MS, "<=",
                                   f"{args.clients} concurrent clients, {os.cpu_count()} CPUs")],
            notes=[f"model {model_path.name}, runtime {predictor.runtime}; load average {load_before:.1f} before",
                   "the server: " + ("a thread of the benchmark's process" if args.in_process_server
                                     else "an `efr serve` process; the clients in the benchmark's process"),
                   "one way at a time"]))
    return 1 if failures + lost else 0


if __name__ == "__main__":
    sys.exit(main())
