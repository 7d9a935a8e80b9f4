"""Listings of users' image files: class folders and CSVs, nothing read yet.

The rules (the same for every caller: the loaders, the ``tf.data`` stream,
bulk encoding):

- **Images** are files whose name ends in one of
  :data:`~keras_hash.datasets.IMAGE_EXTENSIONS` (any case); a folder whose
  name ends in ``.jpg`` is a folder, not an image.
- **Hidden and system files** are skipped, with one warning that counts
  them: names starting with ``.`` (``.DS_Store``, AppleDouble ``._x.jpg``,
  ``.ipynb_checkpoints``) and ``Thumbs.db``, ``desktop.ini``,
  ``__MACOSX`` (any case).
- **Anything else is an error naming it**, never skipped: a loose file
  beside the class folders, a sub-folder or a non-image file inside a class
  folder, a class folder without images.
- **File names** that are not valid UTF-8 are kept as the OS gives them
  (Python's surrogate escapes) and read back exactly.
- **CSVs** must be UTF-8 (a byte-order mark allowed); another encoding is
  an error naming the line. A path with a scheme (``gs://b/x.jpg``,
  ``s3://...``, ``file://...``) is kept exactly as written (not joined to the
  CSV's folder) and read through ``tf.io.gfile`` when decoded;
  ``check_files`` does not check URLs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import warnings

import numpy as np

from keras_hash.arguments import check_bool
from keras_hash.datasets.decoding import IMAGE_EXTENSIONS

#: Names skipped in listings besides those starting with "." (any case).
SYSTEM_FILES = ("thumbs.db", "desktop.ini", "ehthumbs.db", "__macosx")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_system_file(name: str) -> bool:
    """Whether a listing skips ``name``: hidden (``.x``) or a known system file."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def is_url(path: str) -> bool:
    """Whether ``path`` has a scheme (``gs://``, ``s3://``, ``file://``)."""
    return bool(_URL.match(path))


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """A list of image files with their labels, nothing read yet.

    Build one with :func:`list_image_folder` or :func:`read_image_csv`, or
    directly (e.g. a subset: ``ImageFiles(files.paths[:100],
    files.labels[:100], files.class_names)``).

    ```python
    files = keras_hash.datasets.read_image_csv("data/train.csv")
    len(files), files.labels.shape  # 5000, (5000, 81)
    ```

    Attributes:
        paths: file paths, ``tuple`` of ``N`` strings.
        labels: class ids ``int32 [N]`` or multi-hot rows ``uint8 [N, C]``.
        class_names: label ``i`` (column ``i``) is ``class_names[i]``.
    """

    paths: tuple
    labels: np.ndarray
    class_names: tuple

    def __post_init__(self):
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        labels = np.asarray(self.labels)
        if labels.ndim not in (1, 2) or len(labels) != len(self.paths):
            raise ValueError(
                f"labels must be class ids [{len(self.paths)}] or multi-hot rows "
                f"[{len(self.paths)}, classes] for the {len(self.paths)} paths, "
                f"got shape {labels.shape}"
            )
        if labels.ndim == 2 and labels.shape[1] != len(self.class_names):
            raise ValueError(
                f"multi-hot labels have {labels.shape[1]} columns for "
                f"{len(self.class_names)} class names"
            )
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.paths)


def list_image_folder(directory, class_names=None) -> ImageFiles:
    """Lists ``directory/<class>/<image>`` as :class:`ImageFiles`, reading no image.

    Classes are the sub-folders in sorted order (label ``i`` is
    ``class_names[i]``); labels are class ids ``int32 [N]``; files come in
    sorted order within each class. What is listed, skipped (hidden and
    system files, with a warning) and refused (anything else) is in the
    module doc.

    ```python
    files = keras_hash.datasets.list_image_folder("data/train")
    ds = keras_hash.datasets.image_files_dataset(files, (224, 224), shuffle=True)
    ```

    Args:
        directory: the folder holding one sub-folder per class.
        class_names: expected class names (e.g. those of the training
            folder); a folder whose classes differ is an error.
    """
    directory = os.fspath(directory)
    skipped = []
    folders, loose = _entries(directory, skipped)
    if loose:
        raise ValueError(
            f"{directory!r} mixes class folders and loose files: {_some(loose)}. "
            "A class-folder tree holds only <class>/<image> files: move them "
            "into a class folder, or out of the tree"
        )
    if not folders:
        raise ValueError(
            f"No class folders in {directory!r}: expected one sub-folder per class"
        )
    found = tuple(sorted(folders))
    if class_names is not None and tuple(class_names) != found:
        raise ValueError(
            f"Class folders of {directory!r} are {list(found)}, expected "
            f"{list(class_names)}"
        )
    paths, labels = [], []
    for label, name in enumerate(found):
        files = _image_files(os.path.join(directory, name), skipped)
        paths.extend(files)
        labels.extend([label] * len(files))
    _warn_skipped(directory, skipped)
    return ImageFiles(tuple(paths), np.asarray(labels, np.int32), found)


def list_image_paths(directory) -> tuple:
    """The image files of a folder of images, or of a class-folder tree, sorted.

    A folder with (non-hidden) sub-folders is a class-folder tree
    (:func:`list_image_folder`); otherwise every entry must be an image.
    The same rules as :func:`list_image_folder` (module doc).

    ```python
    paths = keras_hash.datasets.list_image_paths("photos")
    ```
    """
    directory = os.fspath(directory)
    folders, _ = _entries(directory, [])
    if folders:
        return list_image_folder(directory).paths
    skipped = []
    paths = tuple(_image_files(directory, skipped))
    _warn_skipped(directory, skipped)
    return paths


def select_image_paths(paths, root, where) -> tuple:
    """The images among matched paths (a glob's matches), by the module's rule.

    A path with a hidden or system component below ``root`` (``.x``,
    ``Thumbs.db``, ``__MACOSX/...``) is skipped, with one warning counting
    them; a local folder is not a file and is passed over, unless its name
    ends in an image extension; anything else that is not an image file
    (another extension, a folder named like an image, a FIFO) is a
    ``ValueError`` naming it. URLs are judged by name only.

    ```python
    matches = glob.glob("photos/**", recursive=True)
    paths = select_image_paths(matches, "photos", "photos/**")
    ```

    Returns:
        the image paths, sorted.
    """
    kept, skipped, odd = [], [], []
    for path in sorted(paths):
        below = path[len(root) :] if is_url(path) else os.path.relpath(path, root)
        parts = [part for part in re.split(r"[/\\]", below) if part not in ("", ".")]
        image_name = path.lower().endswith(IMAGE_EXTENSIONS)
        folder = not is_url(path) and os.path.isdir(path)
        if folder and not image_name:
            continue  # a folder a pattern such as "**" matched: not a file
        if any(is_system_file(part) for part in parts):
            skipped.append(path)
        elif folder or not image_name or not (is_url(path) or os.path.isfile(path)):
            odd.append(path)
        else:
            kept.append(path)
    if odd:
        raise ValueError(
            f"{len(odd)} match(es) of {where!r} are not image files "
            f"({', '.join(IMAGE_EXTENSIONS)} files): {_some(odd)}; narrow the "
            "pattern (e.g. '*.jpg') or move them out"
        )
    _warn_skipped(where, skipped)
    return tuple(kept)


def _entries(directory, skipped):
    """``(sub-folder names, other entry paths)`` of a folder, system files skipped."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No directory {directory!r}: expected an image folder with one "
            "sub-folder per class (e.g. train/cat/0001.jpg)"
        )
    folders, others = [], []
    for entry in os.scandir(directory):
        if is_system_file(entry.name):
            skipped.append(entry.path)
        elif entry.is_dir():
            folders.append(entry.name)
        else:
            others.append(entry.path)
    return folders, sorted(others)


def _image_files(folder, skipped):
    folders, files = _entries(folder, skipped)
    if folders:
        named = [os.path.join(folder, name) for name in sorted(folders)]
        raise ValueError(
            f"{folder!r} holds sub-folders {_some(named)}: nested folders are not "
            "read (a class folder holds image files only)"
        )
    odd = [
        path
        for path in files
        if not path.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path)
    ]
    if odd:
        raise ValueError(
            f"{len(odd)} file(s) in {folder!r} are not images "
            f"({', '.join(IMAGE_EXTENSIONS)} files): {_some(odd)}; move them out"
        )
    if not files:
        raise ValueError(
            f"Folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _some(paths, count=3):
    shown = ", ".join(repr(path) for path in paths[:count])
    return shown + (f" and {len(paths) - count} more" if len(paths) > count else "")


def _warn_skipped(directory, skipped):
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} hidden or system file(s) in {directory!r} "
            f"(e.g. {_some(sorted(skipped), 2)})",
            stacklevel=3,
        )


# CSV files of images: one ``path,labels`` row per image, labels joined by ";".
CSV_HEADERS = (("path", "labels"), ("path", "label"))
LABEL_SEPARATOR = ";"


def read_image_csv(
    csv_path, class_names=None, multi_hot=None, check_files: bool = True
) -> ImageFiles:
    """Reads a CSV of ``path,label[;label...]`` rows as :class:`ImageFiles`.

    The format (multi-label data such as NUS-WIDE and COCO):

    - one row per image, two comma-separated fields: the image path and its
      labels, class names separated by ``;`` (``img/7.jpg,person;dog``);
      fields may be quoted (``"a,b.jpg",cat``), spaces around fields and
      labels are dropped, blank lines are skipped;
    - paths are relative to the CSV's folder, absolute, or URLs
      (``gs://bucket/x.jpg``: kept as written, read through
      ``tf.io.gfile``, not checked by ``check_files``);
    - an optional header: a first row ``path,labels`` (or ``path,label``,
      any case) is skipped; any other first row is an image;
    - every row has at least one label (empty items as in ``cat;`` or
      ``cat;;dog`` are ignored; a repeated label counts once).

    Labels come out as 0/1 multi-hot rows ``uint8 [N, C]`` when
    ``multi_hot=True``, or when ``multi_hot=None`` (default) and some row
    has several labels; otherwise as class ids ``int32 [N]``
    (``multi_hot=False`` makes a row with several labels an error).

    ```python
    # data/train.csv:
    #   path,labels
    #   img/0001.jpg,person;dog
    #   img/0002.jpg,sky
    files = keras_hash.datasets.read_image_csv("data/train.csv")
    files.class_names, files.labels  # ('dog', 'person', 'sky'), [[0 1 0] [0 0 1]]
    test = keras_hash.datasets.read_image_csv("data/test.csv", files.class_names)
    ```

    Args:
        csv_path: the CSV file (UTF-8, an optional byte-order mark; another
            encoding is an error naming the line).
        class_names: the class vocabulary, in label order (e.g. the training
            CSV's ``class_names``, so that test labels line up); a label not
            in it is an error. Defaults to every label in the CSV, sorted.
        multi_hot: ``True``, ``False`` or ``None`` (decide from the rows).
        check_files: check that every listed local file exists and is a
            file (one ``stat`` per row); a missing one is named with its
            line number.

    Returns:
        An :class:`ImageFiles` in the CSV's row order.
    """
    csv_path = os.fspath(csv_path)
    multi_hot = check_bool(multi_hot, "multi_hot", optional=True)
    check_files = check_bool(check_files, "check_files")
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"No CSV file {csv_path!r}")
    rows = _csv_rows(csv_path)
    vocabulary = _vocabulary(csv_path, rows, class_names)
    lookup = {name: i for i, name in enumerate(vocabulary)}
    for line, _, names in rows:
        for name in names:
            if name not in lookup:
                shown = list(vocabulary[:20]) + ["..."] * (len(vocabulary) > 20)
                raise ValueError(
                    f"{csv_path!r}, line {line}: unknown class {name!r}, not one of "
                    f"the {len(vocabulary)} class_names {shown}"
                )
    several = next(((line, names) for line, _, names in rows if len(names) > 1), None)
    if multi_hot is None:
        multi_hot = several is not None
    elif not multi_hot and several is not None:
        raise ValueError(
            f"{csv_path!r}, line {several[0]}: {len(several[1])} labels "
            f"{several[1]} but multi_hot=False (one class id per image)"
        )
    if multi_hot:
        labels = np.zeros((len(rows), len(vocabulary)), np.uint8)
        for i, (_, _, names) in enumerate(rows):
            labels[i, [lookup[name] for name in names]] = 1
    else:
        labels = np.asarray([lookup[names[0]] for _, _, names in rows], np.int32)
    base = os.path.dirname(os.path.abspath(csv_path))
    paths = [
        path if is_url(path) else os.path.normpath(os.path.join(base, path))
        for _, path, _ in rows
    ]
    if check_files:
        missing = [
            (line, path, full)
            for (line, path, _), full in zip(rows, paths, strict=True)
            if not is_url(full) and not os.path.isfile(full)
        ]
        if missing:
            line, path, full = missing[0]
            what = "not a file" if os.path.exists(full) else "missing"
            raise FileNotFoundError(
                f"{len(missing)} image file(s) listed in {csv_path!r} are missing "
                f"or not files; the first: line {line}: {path!r} is {what} "
                f"(looked for {full!r})"
            )
    return ImageFiles(tuple(paths), labels, vocabulary)


def _csv_rows(csv_path):
    """``[(line number, path, [label names])]`` of the CSV's image rows."""
    rows, first = [], True
    with open(csv_path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{csv_path!r}, line {line}: not UTF-8 text (byte "
            f"{data[error.start : error.start + 1]!r} at offset {error.start}): "
            "save the CSV as UTF-8"
        ) from None
    with io.StringIO(text, newline="") as file:
        reader = csv.reader(file, skipinitialspace=True)
        try:
            for fields in reader:
                fields = [field.strip() for field in fields]
                if not any(fields):
                    continue  # a blank line
                header = first and tuple(f.lower() for f in fields) in CSV_HEADERS
                first = False
                if header:
                    continue
                rows.append(_csv_row(csv_path, reader.line_num, fields))
        except csv.Error as error:
            raise ValueError(
                f"{csv_path!r}, line {reader.line_num}: not valid CSV: {error}"
            ) from error
    if not rows:
        raise ValueError(
            f"{csv_path!r} lists no images: expected rows 'path,label[;label...]'"
        )
    return rows


def _csv_row(csv_path, line, fields):
    where = f"{csv_path!r}, line {line}"
    if len(fields) != 2:
        text = ",".join(fields)
        if len(fields) > 2:
            hint = (
                "separate several labels with ';', not ',' (and quote a path "
                "that holds a ',')"
            )
        else:
            hint = "the path and the labels are separated by ','"
        raise ValueError(
            f"{where}: expected 2 fields 'path,label[;label...]', got "
            f"{len(fields)} in {text!r}: {hint}"
        )
    path, labels = fields
    if not path:
        raise ValueError(f"{where}: empty path in {','.join(fields)!r}")
    names = [name.strip() for name in labels.split(LABEL_SEPARATOR)]
    names = list(dict.fromkeys(name for name in names if name))
    if not names:
        raise ValueError(
            f"{where}: no label for {path!r}: expected 'path,label[;label...]'"
        )
    return line, path, names


def _vocabulary(csv_path, rows, class_names):
    if class_names is None:
        return tuple(sorted({name for _, _, names in rows for name in names}))
    vocabulary = tuple(str(name) for name in class_names)
    if not vocabulary:
        raise ValueError("class_names is empty")
    repeated = sorted({n for n in vocabulary if vocabulary.count(n) > 1})
    if repeated:
        raise ValueError(f"class_names repeats {repeated}")
    return vocabulary
