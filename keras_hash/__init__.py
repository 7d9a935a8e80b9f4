"""keras_hash: deep learning to hash for Keras 3.

HashNet, DHN, DCH, CSQ and DPSH models and losses and a continuation hash
layer that train with ``model.fit``; packed binary codes; a Hamming index
and retrieval metrics; SavedModel and TFLite export whose output is packed
codes.

Namespaces: :mod:`keras_hash.codes` (bit order, packing, the Hamming
kernel), :mod:`~keras_hash.labels`, :mod:`~keras_hash.layers`,
:mod:`~keras_hash.schedules`, :mod:`~keras_hash.losses`,
:mod:`~keras_hash.models`, :mod:`~keras_hash.index`,
:mod:`~keras_hash.metrics`, :mod:`~keras_hash.export`,
:mod:`~keras_hash.callbacks`, :mod:`~keras_hash.datasets`,
:mod:`~keras_hash.backbones`, :mod:`~keras_hash.batch_norm` (precise
BatchNorm statistics), :mod:`~keras_hash.training`,
:mod:`~keras_hash.distribute` (multi-worker training),
:mod:`~keras_hash.visualization`. The index kinds with optional
dependencies import them when an index is made:
``keras_hash.index.IVFHammingIndex`` (FAISS, extra ``faiss``) and
``keras_hash.index.MilvusHammingIndex`` (extra ``milvus``);
:mod:`keras_hash.beam` (bulk encoding on Apache Beam, extra ``beam``) is imported by
name. Research recipes
(CIFAR-10 protocols, airbench) are in :mod:`keras_hash.recipes`, which this
package does not import.
"""

from keras_hash import (
    backbones,
    batch_norm,
    callbacks,
    codes,
    datasets,
    distribute,
    export,
    index,
    labels,
    layers,
    losses,
    metrics,
    models,
    schedules,
    training,
    visualization,
)
from keras_hash.codes import hamming_distance, pack_codes, unpack_codes
from keras_hash.index import HammingIndex, RangeResult
from keras_hash.layers import HashLayer
from keras_hash.losses import CSQLoss, DCHLoss, DHNLoss, DPSHLoss, HashNetLoss
from keras_hash.metrics import RetrievalEvaluator
from keras_hash.models import CSQ, DCH, DHN, DPSH, HashModel, HashNet
from keras_hash.schedules import BetaSchedule, ConstantBeta, HashNetContinuation

__version__ = "0.1.0"

__all__ = [
    "CSQ",
    "DCH",
    "DHN",
    "DPSH",
    "BetaSchedule",
    "CSQLoss",
    "ConstantBeta",
    "DCHLoss",
    "DHNLoss",
    "DPSHLoss",
    "HammingIndex",
    "HashLayer",
    "HashModel",
    "HashNet",
    "HashNetContinuation",
    "HashNetLoss",
    "RangeResult",
    "RetrievalEvaluator",
    "backbones",
    "batch_norm",
    "callbacks",
    "codes",
    "datasets",
    "distribute",
    "export",
    "hamming_distance",
    "index",
    "labels",
    "layers",
    "losses",
    "metrics",
    "models",
    "pack_codes",
    "schedules",
    "training",
    "unpack_codes",
    "visualization",
]
