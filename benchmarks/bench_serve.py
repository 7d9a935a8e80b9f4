"""Benchmark: the search service under load on loopback, against its parts alone.

The database holds 50,000 codes with the CIFAR-10 training images as their
pictures: random codes by default (an exact search scans every code whatever
they are), or the images encoded by the run's model with
``--encode_database``; queries are test images encoded by the run's model
(``examples/train_cifar.py``'s SavedModel). In one run this script measures,
per query:

- the parts alone, in this process: decoding the upload (the library's one
  decoder and resize), the encoder on one image, the index's k-NN search;
- the service: ``python -m keras_hash.serve`` in a subprocess (uvicorn on
  127.0.0.1), loaded by ``--clients`` concurrent httpx clients for a bounded
  number of requests, search by uploaded image and by packed code, with
  request batching on (``--max_batch=32``) and off (1).

The service's overhead is its p50 latency with one client over the p50 of
the same work done in process (measured before and after the load test, the
mean of the two). Client and server share the machine's cores.

Usage::

    python benchmarks/bench_serve.py --run=runs/cifar --data_dir=../shared/data/cifar10
    python benchmarks/bench_serve.py ... --database=5000 --requests=200   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as python -m keras_hash.serve

import httpx  # noqa: E402
import numpy as np  # noqa: E402

import keras_hash  # noqa: E402
from keras_hash import datasets  # noqa: E402
from keras_hash.serve import sources  # noqa: E402
from keras_hash.serve.encoder import SavedModelEncoder, decode_upload  # noqa: E402

K = 10


def percentiles(seconds) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def per_call(fn, items, repeat_warmup=3) -> list:
    for item in items[:repeat_warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return times


def measure_parts(encoder, index, uploads, images, query_codes) -> dict:
    """p50 ms per query of each part alone, and the encoder's batched cost."""
    alone = {
        "decode": per_call(lambda d: decode_upload(d, encoder.image_shape), uploads),
        "encode": per_call(lambda im: encoder.encode(im[None]), images),
        "search": per_call(lambda c: index.search(c[None], K), query_codes),
    }
    batched = []
    for start in range(0, len(images), 32):
        chunk = np.stack(images[start : start + 32])
        t0 = time.perf_counter()
        encoder.encode(chunk)
        batched.append((time.perf_counter() - t0) / len(chunk))
    parts = {name: percentiles(t)["p50"] for name, t in alone.items()}
    parts["encode_batched_32"] = float(np.median(batched) * 1000)
    return parts


def encode_database(encoder, paths, batch=256):
    codes = []
    for start in range(0, len(paths), batch):
        images = [
            decode_upload(open(p, "rb").read(), encoder.image_shape)
            for p in paths[start : start + batch]
        ]
        codes.append(encoder.encode(np.stack(images)))
    return np.concatenate(codes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model, index_path, listing, max_batch):
    port = free_port()
    command = [
        sys.executable, "-m", "keras_hash.serve", f"--model={model}",
        f"--index={index_path}", f"--images={listing}", f"--port={port}",
        f"--max_batch={max_batch}", "--no_check", "--log_level=warning",
    ]  # fmt: skip
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read().decode()[-2000:])
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the service did not start in 120 s")


async def load(url, requests, clients):
    """``(latencies, seconds)`` of ``requests`` (method, path, body) sent by
    ``clients`` concurrent clients, each waiting for its answer."""
    latencies, queue = [], list(reversed(requests))

    async def client(session):
        while queue:
            method, path, body = queue.pop()
            start = time.perf_counter()
            reply = await session.request(method, url + path, content=body)
            latencies.append(time.perf_counter() - start)
            if reply.status_code != 200:
                raise RuntimeError(f"{path}: {reply.status_code} {reply.text[:200]}")

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        await client_warmup(session, url, requests)
        start = time.perf_counter()
        await asyncio.gather(*[client(session) for _ in range(clients)])
        return latencies, time.perf_counter() - start


async def client_warmup(session, url, requests):
    for method, path, body in requests[:5]:
        await session.request(method, url + path, content=body)


def row(name, clients, latencies, seconds):
    stats = percentiles(latencies)
    return {
        "what": name,
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": round(stats["p50"], 2),
        "p99_ms": round(stats["p99"], 2),
        "requests_per_s": round(len(latencies) / seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/cifar")
    parser.add_argument("--data_dir", default="../shared/data/cifar10")
    parser.add_argument("--database", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=600, help="per scenario")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--encode_database",
        action="store_true",
        help="encode the database images (about 14 ms each here) instead of "
        "random codes (an exact search costs the same on any codes)",
    )
    args = parser.parse_args()
    model = sources.run_saved_model(args.run)
    encoder = SavedModelEncoder(model)
    train = datasets.list_image_folder(os.path.join(args.data_dir, "train"))
    paths = list(train.paths)[: args.database]
    if args.encode_database:
        start = time.perf_counter()
        codes = encode_database(encoder, paths)
        print(f"encoded {len(codes)} images in {time.perf_counter() - start:.1f} s")
    else:
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (len(paths), encoder.bits // 8), dtype=np.uint8)
        print(f"{len(codes)} random {encoder.bits}-bit codes for the database")
    index = keras_hash.HammingIndex(encoder.bits)
    index.add(codes)
    test = datasets.list_image_folder(os.path.join(args.data_dir, "test"))
    query_paths = list(test.paths)[:: max(1, len(test) // args.requests)]
    uploads = [open(p, "rb").read() for p in query_paths][: args.requests]
    images = [decode_upload(data, encoder.image_shape) for data in uploads]
    query_codes = encoder.encode(np.stack(images))

    parts = [measure_parts(encoder, index, uploads, images, query_codes)]
    print("in process, p50 ms per query:", json.dumps(parts[0]))

    with tempfile.TemporaryDirectory() as folder:
        index_path = os.path.join(folder, "db.khi")
        index.save(index_path)
        listing = os.path.join(folder, "images.jsonl")
        with open(listing, "w") as file:
            for i, p in enumerate(paths):
                file.write(json.dumps({"id": i, "path": os.path.abspath(p)}) + "\n")
        image_requests = [("POST", f"/api/search/image?k={K}", d) for d in uploads]
        code_requests = [
            ("GET", f"/api/search/code?code={c.tobytes().hex()}&k={K}", None)
            for c in query_codes
        ]
        rows = []
        for max_batch in (32, 1):
            process, url = start_service(model, index_path, listing, max_batch)
            try:
                scenarios = [("image", image_requests)]
                if max_batch == 32:
                    scenarios.append(("code", code_requests))
                for name, requests in scenarios:
                    for clients in (1, args.clients):
                        latencies, seconds = asyncio.run(load(url, requests, clients))
                        label = f"{name}, max_batch={max_batch}"
                        rows.append(row(label, clients, latencies, seconds))
                        print(json.dumps(rows[-1]), flush=True)
            finally:
                process.terminate()
                process.wait(30)

    # Again after the load test: the machine is shared, take the mean of both.
    parts.append(measure_parts(encoder, index, uploads, images, query_codes))
    print("in process again:", json.dumps(parts[1]))
    in_process = {key: (parts[0][key] + parts[1][key]) / 2 for key in parts[0]}
    work_image = in_process["decode"] + in_process["encode"] + in_process["search"]
    serve_image = next(r for r in rows if r["what"].startswith("image, max_batch=32"))
    serve_code = next(r for r in rows if r["what"].startswith("code"))
    print(
        f"overhead (service p50, 1 client / same work in process p50): image "
        f"{serve_image['p50_ms'] / work_image:.2f} ({serve_image['p50_ms']:.2f} / "
        f"{work_image:.2f} ms), code {serve_code['p50_ms'] / in_process['search']:.2f}"
        f" ({serve_code['p50_ms']:.2f} / {in_process['search']:.2f} ms)"
    )
    print("| what | clients | requests | p50 ms | p99 ms | requests/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['what']} | {r['clients']} | {r['requests']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['requests_per_s']} |"
        )


if __name__ == "__main__":
    main()
