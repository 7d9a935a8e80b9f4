"""``python -m keras_hash.serve``: serve image search over an index (see --help)."""

from __future__ import annotations

import argparse
import os
import sys

# Idle OpenMP threads (FAISS, oneDNN) spin for a while after each call by
# default and starve the encoder of the machine's cores: measured on 2 cores,
# one upload took 52 ms spinning, 14 ms passive (benchmarks/bench_serve.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EXAMPLES = """examples:
  # the outputs of examples/train_cifar.py and the data folder it trained on
  python -m keras_hash.serve --run=runs/cifar --data_dir=../shared/data/cifar10
  # a SavedModel, an index file and a folder (ids as bulk encoding gives them)
  python -m keras_hash.serve --model=/models/hashnet --index=db.khi --images=photos/
  # TF Serving and Milvus, images listed by bulk encoding
  python -m keras_hash.serve --tf_serving=http://localhost:8501/v1/models/hashnet \\
      --index=milvus:http://localhost:19530 --collection=codes \\
      --images=codes/images.jsonl
"""


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m keras_hash.serve",
        description="Image search over binary codes: a web page and a JSON API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        help="a run folder of examples/train_cifar.py "
        "(model, database.index); needs --data_dir",
    )
    parser.add_argument(
        "--data_dir",
        help="with --run: the CIFAR-10 image folder the run trained on (train/, test/)",
    )
    parser.add_argument(
        "--model",
        help="SavedModel folder (a version, or a model folder of versions: the latest)",
    )
    parser.add_argument(
        "--tf_serving",
        help="TF Serving REST model URL, http://host:8501/v1/models/<name>",
    )
    parser.add_argument(
        "--index",
        help="index file, bulk-encoding output folder, "
        "or milvus:<file.db or server address>",
    )
    parser.add_argument("--collection", help="Milvus collection")
    parser.add_argument(
        "--images",
        help="folder, glob, CSV or images.jsonl listing where each id's image lives",
    )
    parser.add_argument(
        "--ids",
        default="hash",
        choices=("hash", "index"),
        help="id rule of a folder, glob or CSV (as bulk encoding)",
    )
    parser.add_argument(
        "--no_check",
        action="store_true",
        help="skip re-encoding a sample of images to check they match the index",
    )
    parser.add_argument(
        "--max_batch",
        type=int,
        default=32,
        help="largest encoder batch of concurrent uploads",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="uvicorn's log level (info logs every request)",
    )
    args = parser.parse_args(argv)
    if args.run:
        if not args.data_dir:
            parser.error("--run needs --data_dir, the image folder it trained on")
        if args.index or args.images:
            parser.error("--run sets the index and images: drop --index/--images")
    elif not args.index:
        parser.error("give --run, or --index (with --model or --tf_serving)")
    if bool(args.model) == bool(args.tf_serving) and not (args.run and not args.model):
        parser.error("give one of --model and --tf_serving")
    return args


def build(args):
    """The app the arguments describe."""
    from keras_hash.serve import create_app, sources
    from keras_hash.serve.encoder import SavedModelEncoder, TFServingEncoder

    if args.run:
        model = args.model or sources.run_saved_model(args.run)
        index_source = os.path.join(args.run, sources.RUN_INDEX)
    else:
        model, index_source = args.model, args.index
    if args.tf_serving:
        encoder = TFServingEncoder(args.tf_serving)
    else:
        encoder = SavedModelEncoder(model)
    index = sources.open_index(
        index_source, bits=encoder.bits, collection=args.collection
    )
    catalog = None
    if args.run:
        catalog = sources.run_catalog(args.run, args.data_dir)
    elif args.images:
        catalog = sources.ImageCatalog.from_source(args.images, args.ids)
    app = create_app(encoder, index, catalog, max_batch=args.max_batch)
    if catalog is not None and not args.no_check:
        sources.check_catalog(catalog, index.get, encoder.encode, encoder.image_shape)
    return app


def main(argv=None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        app = build(args)
    except (ValueError, FileNotFoundError, ConnectionError, ImportError) as error:
        sys.exit(f"error: {error}")
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        index = app.state.service.index
        if hasattr(index, "close"):  # a Milvus connection
            index.close()


if __name__ == "__main__":
    main()
