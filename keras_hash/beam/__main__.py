"""``python -m keras_hash.beam``: bulk encoding from the shell.

```shell
python -m keras_hash.beam --saved_model=/models/hashnet --images=photos/ \\
    --output=codes/ --runner=DirectRunner --direct_num_workers=2
```
"""

from __future__ import annotations

import argparse
import sys

from keras_hash.beam import shards
from keras_hash.beam.listing import ID_RULES
from keras_hash.beam.pipeline import encode_images


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_hash.beam",
        description="Encode an image collection to packed binary codes with an "
        "exported keras_hash SavedModel, on Apache Beam. Unknown options go to "
        "Beam (--runner, --project, --direct_num_workers, ...).",
    )
    parser.add_argument(
        "--saved_model",
        required=True,
        help="version folder or model folder of export_saved_model",
    )
    parser.add_argument(
        "--images",
        required=True,
        help="folder, glob pattern, or CSV ('path,id' or 'path,labels')",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="folder for codes-*.npz, manifest.json, errors-*.jsonl",
    )
    parser.add_argument(
        "--ids",
        default="hash",
        choices=ID_RULES,
        help="id rule when the input gives none (default: hash)",
    )
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_shards", type=int, default=None)
    parser.add_argument(
        "--no_shards",
        action="store_true",
        help="write no shard files (with --milvus_uri)",
    )
    parser.add_argument(
        "--milvus_uri",
        default=None,
        help="also write to Milvus (a server URI or a Lite .db file)",
    )
    parser.add_argument("--milvus_collection", default="keras_hash")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the output of an earlier run"
    )
    return parser


def main(argv=None) -> int:
    """Command line entry: ``python -m keras_hash.beam --help``."""
    args, beam_args = _parser().parse_known_args(argv)
    milvus = None
    if args.milvus_uri:
        milvus = {"uri": args.milvus_uri, "collection": args.milvus_collection}
    summary = encode_images(
        args.images,
        args.saved_model,
        args.output,
        ids=args.ids,
        batch_size=args.batch_size,
        num_shards=args.num_shards,
        write_shards=not args.no_shards,
        milvus=milvus,
        overwrite=args.overwrite,
        pipeline_args=beam_args,
    )
    if summary is not None:
        print(
            f"encoded {summary['count']} images to {len(summary['shards'])} shards "
            f"in {args.output} ({summary['bits']} bits); {summary['failed']} failed "
            f"(see {args.output}/{shards.ERRORS_PREFIX}-*{shards.ERRORS_SUFFIX})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
