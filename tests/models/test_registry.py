import keras
import numpy as np
import pytest

import models
from models import registry


def test_known_architectures():
    assert {"mlp", "cnn"} <= set(models.names())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown architecture 'transformer'; known: .*cnn.*lstm.*mlp"):
        models.get("transformer")


def test_a_name_registers_once():
    models.get("mlp")   # imports models.mlp, which registers it
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("mlp", hyperparameters=registry.Hyperparameters, tasks=())(lambda *a: None)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)])
def test_builders_give_class_probabilities(name, shape):
    model = models.build(name, shape, 10, {})
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 10)
    probabilities = model.predict(np.random.default_rng(0).random((3, *shape)), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fixed_batch_build_has_the_same_weights_layout(name):
    dynamic = models.build(name, (8, 8, 1), 10, {})
    fixed = models.build(name, (8, 8, 1), 10, {}, batch_size=1)
    assert fixed.input_shape == (1, 8, 8, 1)
    fixed.set_weights(dynamic.get_weights())
    x = np.random.default_rng(1).random((1, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(fixed(x), dynamic(x), atol=1e-6)


def test_hyperparameters_shape_the_model():
    small = models.build("mlp", (8, 8, 1), 10, {"hidden_units": [16], "dropout_rate": 0.0})
    large = models.build("mlp", (8, 8, 1), 10, {"hidden_units": [64, 32]})
    assert [l.units for l in small.layers if isinstance(l, keras.layers.Dense)] == [16, 10]
    assert [l.units for l in large.layers if isinstance(l, keras.layers.Dense)] == [64, 32, 10]
    assert not any(isinstance(l, keras.layers.Dropout) for l in small.layers)
    cnn = models.build("cnn", (28, 28, 1), 10, {"filters": [4, 8, 16], "convs_per_block": 2,
                                                 "batch_norm": True})
    assert sum(isinstance(l, keras.layers.Conv2D) for l in cnn.layers) == 6
    assert sum(isinstance(l, keras.layers.MaxPooling2D) for l in cnn.layers) == 3


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(ValueError, match="hidden_unit"):
        models.build("mlp", (8, 8, 1), 10, {"hidden_unit": [3]})


def test_the_family_index_names_every_registered_architecture_and_its_module():
    import importlib

    from models import registry

    for module in sorted(set(registry.FAMILIES.values())):
        importlib.import_module(f"models.{module}")
    assert set(registry._REGISTRY) == set(registry.FAMILIES)
    for name, arch in registry._REGISTRY.items():
        assert arch.build.__module__ == arch.module == f"models.{registry.FAMILIES[name]}"


def test_looking_an_architecture_up_imports_its_family_alone():
    import subprocess
    import sys

    probe = ("import sys, models; models.get('cnn'); "
             "print(sorted(m for m in sys.modules if m.startswith('models')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split("\n")[0] == "['models', 'models.cnn', 'models.registry']"


def test_registering_outside_the_index_is_refused():
    from models.registry import Hyperparameters, register

    with pytest.raises(ValueError, match="list it in models.registry.FAMILIES"):
        register("transformer", hyperparameters=Hyperparameters, tasks=("image_classification",))(lambda *a: None)
