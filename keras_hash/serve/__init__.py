"""Image search over binary codes: an ASGI service and its web page.

Give it an image, get similar images back. The service encodes uploads with
an exported encoder (a SavedModel in process, or TF Serving over REST),
searches any index of the library (:mod:`keras_hash.index`: exact, IVF,
Milvus) and serves the indexed images and a static web page (no build step,
no network: ``keras_hash/serve/static``). Install with
``pip install keras-hash[serve]`` (FastAPI, uvicorn, Pillow).

```shell
# the outputs of examples/train_cifar.py, with the images it trained on
python -m keras_hash.serve --run=runs/cifar --data_dir=data/cifar10
# any SavedModel, index and image collection
python -m keras_hash.serve --model=/models/hashnet --index=codes/ --images=photos/
```

```python
from keras_hash.serve import create_app
app = create_app(encoder, index, catalog)   # a FastAPI app, for uvicorn or tests
```

Modules: :mod:`~keras_hash.serve.app` (endpoints),
:mod:`~keras_hash.serve.encoder` (upload decoding, encoders, batching),
:mod:`~keras_hash.serve.sources` (indexes and id -> image maps). The service
only reads: a kill mid-request leaves nothing behind.
"""

_HINT = "keras_hash.serve needs the web stack: pip install keras-hash[serve]"


def create_app(*args, **kwargs):
    """The search app; see :func:`keras_hash.serve.app.create_app`."""
    try:
        from keras_hash.serve.app import create_app as create
    except ImportError as error:
        raise ImportError(f"{_HINT} ({error})") from error
    return create(*args, **kwargs)
