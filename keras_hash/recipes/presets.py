"""Named CIFAR-10 hashing recipes: every setting of a run in one dataclass.

A :class:`Recipe` holds everything that decides what a CIFAR-10 run trains
(method, bits, protocol, backbone, the pre-training and hashing phases,
augmentation, test-time averaging). :data:`PRESETS` names the recipes we
measured (``docs/results.md`` has their figures); ``examples/train_cifar.py``
turns each field into a flag, so ``--preset=dhn --bits=32`` is the ``dhn``
recipe at 32 bits.

```python
from keras_hash.recipes import presets

recipe = presets.get("cifar10-2", bits=32)
recipe.backbone  # 'whitened_cnn'
```
"""

from __future__ import annotations

import dataclasses

from keras_hash import backbones
from keras_hash.codes import check_bits
from keras_hash.recipes import cifar
from keras_hash.recipes.precision import POLICIES

_HELP = "help"


def _field(default, help_text: str):
    return dataclasses.field(default=default, metadata={_HELP: help_text})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every setting that decides what a CIFAR-10 hashing run trains.

    The defaults are the best known recipe (preset ``"cifar10-2"``): HashNet
    at 64 bits on the ``cifar10-2`` protocol, airbench's ``whitened_cnn``
    pre-trained as a classifier for 12 epochs (8 on 24x24 crops), then 3
    epochs of the hash layer on the frozen backbone's cached features, codes
    from features averaged over mirror and one-pixel translations.
    """

    method: str = _field("hashnet", "Hashing method: hashnet, dhn, dch, csq or dpsh.")
    bits: int = _field(64, "Code length K (a multiple of 8).")
    protocol: str = _field(
        "cifar10-2",
        "Split protocol: dhn (1k query / 5k train / 54k database), cifar10-1 "
        "(train inside a 59k database), cifar10-2 (10k test query / 50k train "
        "= database).",
    )
    backbone: str = _field(
        "whitened_cnn",
        "cifar_resnet (a small ResNet), whitened_cnn (airbench's CNN, "
        "pre-trained with airbench's recipe) or a keras.applications name.",
    )
    width: int = _field(32, "Stem width of cifar_resnet (stages 2x/4x/8x).")
    weights: str | None = _field(
        None, "Weights of a keras.applications backbone: a file or 'imagenet'."
    )
    seed: int = _field(0, "Seed of the split, data order, augmentation, init.")
    precision: str = _field(
        "auto",
        "Dtype policy of training: auto (keras_hash.recipes.precision: mixed "
        "bfloat16 on CPUs with AMX and GPUs of compute capability 8.0+, "
        "float32 elsewhere), float32, mixed_bfloat16 or mixed_float16. The "
        "saved and exported model is float32 either way.",
    )
    epochs: int = _field(3, "Epochs of the hashing phase.")
    batch_size: int = _field(128, "Batch size of the hashing phase (in-batch pairs).")
    learning_rate: float = _field(
        0.05, "Peak learning rate from scratch (SGD + Nesterov, warm-up, cosine)."
    )
    warmup_epochs: float = _field(2.0, "Linear warm-up epochs from scratch.")
    weight_decay: float = _field(5e-4, "Decoupled weight decay of the hashing SGD.")
    inner_product_scale: float | None = _field(
        None,
        "Scale of the code inner product: HashNet's alpha (default 10 / bits) "
        "or DHN's scale (default 0.5).",
    )
    normalize_codes: bool = _field(
        True, "Batch-normalize the hash layer's z before tanh(beta * z)."
    )
    pretrain_epochs: int = _field(
        12,
        "Epochs of softmax classification before hashing (whitened_cnn: "
        "airbench's recipe; other backbones: the hashing SGD recipe).",
    )
    pretrain_batch_size: int | None = _field(
        None,
        "Batch size of pre-training. Default: airbench's 1024 for whitened_cnn "
        "(its learning rate scales with the batch), --batch_size otherwise.",
    )
    pretrain_low_res_epochs: int = _field(
        8, "The first pre-training epochs on random --low_res_size crops."
    )
    low_res_size: int = _field(24, "Side of the low-resolution crops.")
    finetune_learning_rate: float = _field(
        0.02, "Peak learning rate of hashing after pre-training (cosine decay)."
    )
    finetune_backbone: bool = _field(
        False,
        "After pre-training, train the backbone with the hash layer (else it "
        "is frozen and only the hash layer trains).",
    )
    cache_features: bool = _field(
        True,
        "With a frozen pre-trained backbone: train the hash layer on features "
        "of the un-augmented training images computed once.",
    )
    hash_train_size: int | None = _field(
        None,
        "With cache_features: train the hash layer on the features of at most "
        "this many training images (a seeded subset; default all).",
    )
    flip_average: bool = _field(
        True, "Encode from features averaged with the mirror image's."
    )
    translate_average: bool = _field(
        True, "Also average features over one-pixel translations (airbench)."
    )
    crop_padding: int | None = _field(
        None,
        "Largest shift of the random crop. Default: 2 when pre-training "
        "whitened_cnn (airbench's), 4 otherwise.",
    )
    cutout: int = _field(0, "Side of a random square zeroed per image (0: off).")
    query_per_class: int | None = _field(None, "Override the query size per class.")
    train_per_class: int | None = _field(None, "Override the train size per class.")
    database_size: int | None = _field(None, "Keep a random subset of the database.")

    def __post_init__(self):
        _check(self)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (unknown names are an error)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValueError(f"Unknown recipe settings: {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_names() -> tuple:
    """The names of the :class:`Recipe` settings."""
    return tuple(field.name for field in dataclasses.fields(Recipe))


def field_help(name: str) -> str:
    """The help text of a :class:`Recipe` setting."""
    return next(f.metadata[_HELP] for f in dataclasses.fields(Recipe) if f.name == name)


def _check(recipe: Recipe) -> None:
    choices = {
        "method": ("hashnet", "dhn", "dch", "csq", "dpsh"),
        "protocol": cifar.PROTOCOLS,
        "precision": ("auto", *POLICIES),
    }
    for name, allowed in choices.items():
        if getattr(recipe, name) not in allowed:
            raise ValueError(
                f"{name} must be one of {', '.join(allowed)}, got "
                f"{getattr(recipe, name)!r}"
            )
    check_bits(recipe.bits)
    if recipe.cache_features and (
        recipe.finetune_backbone or not recipe.pretrain_epochs
    ):
        raise ValueError(
            "cache_features trains the hash layer on a frozen pre-trained "
            "backbone: it needs pretrain_epochs > 0 and finetune_backbone=False"
        )
    if not 0 <= recipe.pretrain_low_res_epochs <= recipe.pretrain_epochs:
        raise ValueError(
            f"pretrain_low_res_epochs={recipe.pretrain_low_res_epochs} must be "
            f"between 0 and pretrain_epochs={recipe.pretrain_epochs}"
        )
    least = backbones.WHITENED_CNN_MIN_SIDE
    low_res = recipe.pretrain_low_res_epochs and recipe.backbone == "whitened_cnn"
    if low_res and recipe.low_res_size < least:
        raise ValueError(
            f"whitened_cnn needs low_res_size >= {least}, got {recipe.low_res_size}"
        )
    if recipe.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {recipe.epochs}")


_DHN = Recipe(
    protocol="dhn",
    bits=48,
    pretrain_epochs=60,
    pretrain_low_res_epochs=0,
    epochs=10,
    finetune_backbone=True,
    cache_features=False,
    translate_average=False,
)

#: The measured recipes (figures in docs/results.md).
PRESETS = {
    # mAP@1000 0.904 (seeds 0 and 1) in 27.6-29.1 min, float32, 2-core CPU.
    "cifar10-2": Recipe(),
    # dhn protocol, 48 bits: mAP 0.657-0.662 in about 21 min.
    "dhn": _DHN,
    # No pre-training: cifar_resnet from scratch (dhn, 48 bits: mAP 0.557 in
    # 40 epochs with AMX bfloat16).
    "scratch": _DHN.replace(
        backbone="cifar_resnet", epochs=40, pretrain_epochs=0, flip_average=False
    ),
}

#: What ``--quick`` changes in a preset with cached features (the default):
#: a smoke run of 5-6 minutes on a busy 2-core CPU that shows the method
#: working: whitened_cnn pre-trained 2 epochs on 30,000 images at 24x24,
#: the hash layer on 5,000 cached features, 1,000 queries against 25,000
#: database images (mAP@1000 about 0.6, chance 0.1; docs/results.md).
QUICK = {
    "query_per_class": 100,
    "train_per_class": 3000,
    "database_size": 25000,
    "width": 16,
    "epochs": 5,
    "pretrain_epochs": 2,
    "pretrain_low_res_epochs": 2,
    "pretrain_batch_size": 256,
    "hash_train_size": 5000,
    "flip_average": False,
    "translate_average": False,
}
#: What ``--quick`` changes in a preset that trains on images (dhn,
#: scratch): a few minutes on a subset, a check that everything runs.
QUICK_IMAGES = {
    "query_per_class": 10,
    "train_per_class": 50,
    "database_size": 2000,
    "width": 16,
    "epochs": 1,
    "pretrain_epochs": 2,
    "pretrain_low_res_epochs": 1,
}


def get(name: str = "cifar10-2", quick: bool = False, **changes) -> Recipe:
    """The preset ``name``, with ``--quick`` sizes and then ``changes`` applied.

    Args:
        name: a key of :data:`PRESETS`.
        quick: apply :data:`QUICK` (settings in ``changes`` win).
        **changes: settings to override.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: expected one of {list(PRESETS)}")
    recipe = quick_sizes(PRESETS[name]) if quick else PRESETS[name]
    return recipe.replace(**changes)


def quick_sizes(recipe: Recipe) -> Recipe:
    """``recipe`` with the :data:`QUICK` (cached features) or
    :data:`QUICK_IMAGES` sizes (no pre-training added)."""
    sizes = dict(QUICK if recipe.cache_features else QUICK_IMAGES)
    if not recipe.pretrain_epochs:
        sizes.update(pretrain_epochs=0, pretrain_low_res_epochs=0)
    return recipe.replace(**sizes)
