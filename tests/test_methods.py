"""The DCH, CSQ and DPSH models: ``.keras`` round trips, the CIFAR recipe's
``--method`` and an end-to-end run on scikit-learn's digits. (Their losses
are tested against the papers in tests/test_losses.py.)
"""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

import keras_hash
from keras_hash import losses
from keras_hash.recipes import pipeline, presets
from tests.test_models import conv_backbone

MODELS = [
    (keras_hash.DCH, {}, keras_hash.DCHLoss),
    (keras_hash.CSQ, {"num_classes": 3, "center_seed": 2}, keras_hash.CSQLoss),
    (keras_hash.DPSH, {}, keras_hash.DPSHLoss),
]


@pytest.mark.parametrize("cls, kwargs, loss_cls", MODELS)
def test_models_round_trip_through_a_keras_file(cls, kwargs, loss_cls, tmp_path):
    model = cls(conv_backbone(), bits=16, **kwargs)
    assert isinstance(model.hash_layer.beta_schedule, keras_hash.ConstantBeta)
    model.compile(optimizer="adam")
    assert type(model.loss) is loss_cls
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    labels = np.arange(16) % 3
    model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(restored) is cls
    config, restored_config = model.get_config(), restored.get_config()
    config.pop("backbone")
    restored_config.pop("backbone")
    assert restored_config == config
    np.testing.assert_array_equal(
        restored.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    np.testing.assert_array_equal(restored.encode(x), model.encode(x))
    assert type(restored.loss) is loss_cls
    assert restored.loss.get_config() == model.loss.get_config()


def test_csq_model_loss_uses_its_centres():
    model = keras_hash.CSQ(conv_backbone(), bits=8, num_classes=20, center_seed=3)
    assert model.get_config()["num_classes"] == 20
    model.compile()
    np.testing.assert_array_equal(model.loss.centers, model.centers)
    np.testing.assert_array_equal(model.centers, losses.hash_centers(20, 8, seed=3))
    other = keras_hash.CSQ(conv_backbone(), bits=8, num_classes=20, center_seed=4)
    assert np.any(other.centers != model.centers)  # 20 > 2 * 8: random centres


def test_recipe_accepts_the_new_methods():
    for method, (cls, _, loss_cls) in zip(("dch", "csq", "dpsh"), MODELS, strict=True):
        recipe = presets.get("cifar10-2", method=method, bits=16)
        model = pipeline.build_model(recipe, (8, 8, 1), conv_backbone(), 256, 10)
        assert type(model) is cls and type(model.loss) is loss_cls
        assert model.backbone.trainable is False and model.name == method
        if method == "csq":
            assert model.loss.num_classes == 10 and model.loss.bits == 16
    with pytest.raises(ValueError, match="csq needs num_classes"):
        pipeline.build_model(presets.get(method="csq"), (8, 8, 1), conv_backbone(), 9)
    with pytest.raises(ValueError, match="inner_product_scale is for hashnet and dhn"):
        recipe = presets.get(method="dch", inner_product_scale=0.5)
        pipeline.build_model(recipe, (8, 8, 1), conv_backbone(), 256, 10)
    with pytest.raises(ValueError, match="method must be one of .*dch, csq, dpsh"):
        presets.get(method="dsh")


_GRID = pathlib.Path(__file__).parents[1] / "experiments" / "defaults_grid.py"
_spec = importlib.util.spec_from_file_location("defaults_grid", _GRID)
defaults_grid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(defaults_grid)

DIGITS_EPOCHS = 10  # measured mAP at 8 epochs: DCH 0.95, CSQ 0.97, DPSH 0.96


@pytest.fixture(scope="module")
def digits():
    return defaults_grid.digits_split(seed=0)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (keras_hash.DCH, {}),
        (keras_hash.CSQ, {"num_classes": 10}),
        (keras_hash.DPSH, {}),
    ],
)
def test_defaults_hash_digits(cls, kwargs, digits):
    """32 bits, the library's defaults (Adam 1e-3), the conv_dense backbone."""
    (x_db, y_db), (x_q, y_q) = digits
    model = cls(defaults_grid.make_backbone("conv_dense"), bits=32, **kwargs)
    model.compile()
    model.fit(x_db, y_db, batch_size=32, epochs=DIGITS_EPOCHS, verbose=0)
    evaluator = keras_hash.RetrievalEvaluator(
        query_codes=model.encode(x_q),
        query_labels=y_q,
        database_labels=y_db,
        database_codes=model.encode(x_db),
        bits=32,
    )
    assert evaluator.map() >= 0.9, evaluator.map()
