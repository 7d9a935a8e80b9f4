"""Bulk encoding of image collections with Apache Beam: images in, code shards out.

A batch pipeline lists image files (:mod:`~keras_hash.beam.listing`, ids
included), decodes and resizes them with :mod:`keras_hash.datasets`' one
decoder (the pixels training saw), encodes them in batches with an exported
SavedModel (:mod:`~keras_hash.beam.saved_model`) through Beam's
``RunInference`` (:mod:`~keras_hash.beam.transforms`), and writes the packed
codes with their ids to sharded files (:mod:`~keras_hash.beam.shards`), to
Milvus, or both (:mod:`~keras_hash.beam.pipeline`). Files that cannot be
read go to a dead-letter output with their error; the job ends only if
every listed image is encoded or there (``count + failed == listed``).

The same pipeline runs on the ``DirectRunner`` (one machine) or on
Dataflow, Flink and Spark by changing the runner options
(``docs/bulk_encoding.md``). Apache Beam is imported only by
:mod:`keras_hash.beam.transforms` (and so by :func:`encode_images`);
without it they raise ``ImportError`` naming ``pip install keras-hash[beam]``.
The listing and the shard reader need no Beam.

```python
from keras_hash import beam

summary = beam.encode_images(
    "photos/", "/models/hashnet", "codes/", pipeline_args=["--runner=DirectRunner"]
)
codes, ids = beam.read_code_shards("codes/")
index = beam.build_hamming_index("codes/")
```

From the shell::

    python -m keras_hash.beam --saved_model=/models/hashnet \\
        --images=photos/ --output=codes/ --runner=DirectRunner
"""

from keras_hash.beam.listing import ID_RULES, list_images, stable_id
from keras_hash.beam.pipeline import encode_images
from keras_hash.beam.saved_model import resolve_saved_model, saved_model_spec
from keras_hash.beam.shards import (
    build_hamming_index,
    read_code_shards,
    read_dead_letters,
    shard_name,
    write_shard,
)

__all__ = [
    "ID_RULES",
    "build_hamming_index",
    "encode_images",
    "list_images",
    "read_code_shards",
    "read_dead_letters",
    "resolve_saved_model",
    "saved_model_spec",
    "shard_name",
    "stable_id",
    "write_shard",
]
