"""The SavedModel that bulk encoding runs: where it is, what it takes and gives.

A keras_hash SavedModel (:func:`keras_hash.export.export_saved_model`) maps
``images [-1, H, W, C]`` to uint8 ``codes [-1, bits // 8]`` in its
``serving_default`` signature; :func:`saved_model_spec` reads that from the
graph without loading variables.

```python
shape, dtype, bits = saved_model_spec("/models/hashnet")  # latest version
```
"""

from __future__ import annotations

import os

SIGNATURE = "serving_default"


def resolve_saved_model(path: str) -> str:
    """The version folder to load: ``path`` itself, or its largest numeric sub-folder.

    ``path`` may be a version folder (holding ``saved_model.pb``) or a
    model folder ``<base>/<name>`` of TF Serving's layout.
    """
    import tensorflow as tf

    path = os.fspath(path)
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    if tf.io.gfile.isdir(path):
        versions = [
            int(name.rstrip("/"))
            for name in tf.io.gfile.listdir(path)
            if name.rstrip("/").isdigit()
        ]
        if versions:
            return resolve_saved_model(os.path.join(path, str(max(versions))))
    raise FileNotFoundError(
        f"no SavedModel at {path!r}: expected a version folder holding "
        "saved_model.pb or a model folder of numeric versions (export_saved_model)"
    )


def saved_model_spec(path: str) -> tuple[tuple[int, ...], str, int]:
    """``(image_shape, dtype, bits)`` of a keras_hash SavedModel, read from its graph.

    Reads ``saved_model.pb`` only (no variables, no graph load) and checks
    that ``serving_default`` maps ``images [-1, H, W, C]`` to uint8 ``codes``.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    path = resolve_saved_model(path)
    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as file:
        proto.ParseFromString(file.read())
    for meta_graph in proto.meta_graphs:
        signature = meta_graph.signature_def.get(SIGNATURE)
        if signature is None or set(signature.outputs) != {"codes"}:
            continue
        if set(signature.inputs) != {"images"}:
            continue
        image, codes = signature.inputs["images"], signature.outputs["codes"]
        shape = [d.size for d in image.tensor_shape.dim]
        code_shape = [d.size for d in codes.tensor_shape.dim]
        if (
            len(shape) != 4
            or min(shape[1:]) < 1
            or tf.as_dtype(codes.dtype) != tf.uint8
            or len(code_shape) != 2
            or code_shape[1] < 1
        ):
            break
        if shape[3] not in (1, 3):
            raise ValueError(
                f"{path!r} takes {shape[3]}-channel images; bulk encoding reads "
                "grey (1) or RGB (3) images"
            )
        return tuple(shape[1:]), tf.as_dtype(image.dtype).name, code_shape[1] * 8
    raise ValueError(
        f"{path!r} is not a keras_hash SavedModel: expected the signature "
        f"{SIGNATURE!r} from images [-1, H, W, C] to uint8 codes [-1, bits // 8] "
        "(keras_hash.export.export_saved_model)"
    )
