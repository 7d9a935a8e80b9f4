"""Users' own image data for hashing: listings, the one decoder, ``tf.data`` streams.

Images stay raw ``uint8`` (0-255) all the way into the model: normalization
belongs in the backbone (see :mod:`keras_hash.backbones`), so that an exported
model takes the same raw images as training did.

- :mod:`~keras_hash.datasets.listing`: users' data as a class-per-folder
  tree (``root/<class>/*.jpg``, :func:`list_image_folder`) or a CSV of
  ``path,labels`` rows (:func:`read_image_csv`, multi-label as NUS-WIDE and
  COCO), giving an :class:`ImageFiles` list; what is listed, skipped and
  refused.
- :mod:`~keras_hash.datasets.decoding`: the one rule from file bytes to
  pixels (:func:`decode_image`, :func:`read_image`), used by every path.
- :mod:`~keras_hash.datasets.images`: :func:`load_image_files` (into
  memory, small data) and :func:`image_files_dataset` (streamed, any size).
- :mod:`~keras_hash.datasets.streams`: resumable training streams of
  in-memory images (:func:`train_dataset`, :func:`augment`). CIFAR-10 and
  its split protocols live in :mod:`keras_hash.recipes.cifar`.

```python
files = keras_hash.datasets.read_image_csv("data/train.csv")
train = keras_hash.datasets.image_files_dataset(files, (224, 224), shuffle=True)
```
"""

from keras_hash.datasets.decoding import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    check_image_size,
    decode_file_tensor,
    decode_image,
    read_image,
    read_image_bytes,
    resize_image,
)
from keras_hash.datasets.images import (
    ImageFolder,
    image_files_dataset,
    load_image_csv,
    load_image_files,
    load_image_folder,
)
from keras_hash.datasets.listing import (
    CSV_HEADERS,
    LABEL_SEPARATOR,
    SYSTEM_FILES,
    ImageFiles,
    is_system_file,
    is_url,
    list_image_folder,
    list_image_paths,
    read_image_csv,
)
from keras_hash.datasets.streams import (
    CROP_PADDING,
    FLIP_MODES,
    PADDING_MODES,
    augment,
    eval_dataset,
    steps_per_epoch,
    train_dataset,
    training_order,
)

__all__ = [
    "CROP_PADDING",
    "CSV_HEADERS",
    "FLIP_MODES",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "LABEL_SEPARATOR",
    "PADDING_MODES",
    "SYSTEM_FILES",
    "ImageFiles",
    "ImageFolder",
    "augment",
    "check_image_size",
    "decode_file_tensor",
    "decode_image",
    "eval_dataset",
    "image_files_dataset",
    "is_system_file",
    "is_url",
    "list_image_folder",
    "list_image_paths",
    "load_image_csv",
    "load_image_files",
    "load_image_folder",
    "read_image",
    "read_image_bytes",
    "read_image_csv",
    "resize_image",
    "steps_per_epoch",
    "train_dataset",
    "training_order",
]
