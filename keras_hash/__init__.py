"""keras_hash: deep learning to hash for Keras 3.

HashNet and DHN models, losses and a continuation hash layer that train with
``model.fit``; packed binary codes; a Hamming index and retrieval metrics;
SavedModel and TFLite export whose output is packed codes.
"""

from keras_hash import (
    backbones,
    callbacks,
    datasets,
    evaluation,
    export,
    losses,
    precision,
    pretraining,
    schedules,
    similarity,
)
from keras_hash.codes import hamming_distance, pack_codes, unpack_codes
from keras_hash.index import HammingIndex, RangeResult
from keras_hash.layers import HashLayer
from keras_hash.losses import DHNLoss, HashNetLoss
from keras_hash.models import DHN, HashModel, HashNet
from keras_hash.schedules import BetaSchedule, ConstantBeta, HashNetContinuation

__version__ = "0.1.0"

__all__ = [
    "DHN",
    "BetaSchedule",
    "ConstantBeta",
    "DHNLoss",
    "HammingIndex",
    "HashLayer",
    "HashModel",
    "HashNet",
    "HashNetContinuation",
    "HashNetLoss",
    "RangeResult",
    "backbones",
    "callbacks",
    "datasets",
    "evaluation",
    "export",
    "hamming_distance",
    "losses",
    "pack_codes",
    "precision",
    "pretraining",
    "schedules",
    "similarity",
    "unpack_codes",
]
