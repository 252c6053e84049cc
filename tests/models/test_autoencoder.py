"""Autoencoders (work in progress for issue 6): builders, noise, the VAE's train_step, parts."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models import autoencoder
from models.registry import Head

SHAPE = (28, 28, 1)
KINDS = ["autoencoder", "deep_autoencoder", "conv_autoencoder", "denoising_autoencoder", "vae"]


def _images(n=256, seed=0):
    """Blobs in [0, 1]: learnable, and far from noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    centres = rng.uniform(6, 22, (n, 2))
    images = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 18.0)
    return images[..., None].astype(np.float32)


def _build(kind, **hyperparameters):
    return models.build(kind, SHAPE, Head(784, "sigmoid"), {"code_size": 8, **hyperparameters})


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reconstructs_through_named_halves(kind):
    model = _build(kind)
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    x = _images(4)
    code = encoder.predict(x, verbose=0)
    code = code[0] if isinstance(code, list) else code   # the VAE's [mean, log variance]
    assert code.shape == (4, 8)
    np.testing.assert_allclose(decoder.predict(code, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert model.predict(x, verbose=0).shape == (4, *SHAPE)


def test_head_must_be_the_input_size():
    with pytest.raises(ValueError, match="must have 784 units"):
        models.build("autoencoder", SHAPE, Head(10), {})


@pytest.mark.parametrize("kind", ["gaussian", "masking", "salt_and_pepper"])
def test_noise_corrupts_while_training_only(kind):
    layer = autoencoder.InputNoise(kind, 0.3, seed=3)
    x = _images(8)
    np.testing.assert_array_equal(layer(x, training=False), x)
    noisy = np.asarray(layer(x, training=True))
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and not np.allclose(noisy, x)
    if kind != "gaussian":
        changed = np.mean(~np.isclose(noisy, x))
        assert 0.1 < changed < 0.35   # about `level` of the pixels (some already were 0 or 1)


@pytest.mark.parametrize("seed", [5, "generator"])
def test_salt_and_pepper_sets_both_salt_and_pepper(seed):
    x = np.full((4, 16, 16, 1), 0.5, np.float32)
    noisy = np.asarray(autoencoder.corrupt(x, "salt_and_pepper", 0.4,
                                           keras.random.SeedGenerator(5) if seed == "generator" else seed))
    hit = noisy != 0.5
    assert 0.3 < hit.mean() < 0.5 and 0.4 < noisy[hit].mean() < 0.6   # about half 0, half 1
    assert set(np.unique(noisy[hit])) == {0.0, 1.0}


def test_noise_follows_the_global_seed():
    def noise(global_seed):
        keras.utils.set_random_seed(global_seed)
        return np.asarray(autoencoder.InputNoise("gaussian", 0.3)(_images(2), training=True))
    np.testing.assert_array_equal(noise(1), noise(1))
    assert not np.allclose(noise(1), noise(2))


def test_deep_autoencoder_learns_to_reconstruct():
    keras.utils.set_random_seed(0)
    model = _build("deep_autoencoder", hidden_units=[64])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x = _images(512)
    before = model.evaluate(x, x, verbose=0)
    model.fit(x, x, epochs=15, batch_size=64, verbose=0)
    assert model.evaluate(x, x, verbose=0) < 0.25 * before


def test_vae_train_step_lowers_the_negative_elbo_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = _build("vae", hidden_units=[64], code_size=2)
    model.compile(keras.optimizers.Adam(0.005))
    x = _images(512)
    first = model.evaluate(x, verbose=0, return_dict=True)
    history = model.fit(x, epochs=10, batch_size=64, verbose=0).history
    assert set(history) >= {"loss", "reconstruction_loss", "kl_loss"}
    last = model.evaluate(x, verbose=0, return_dict=True)
    assert last["loss"] < 0.8 * first["loss"] and last["kl_loss"] > 0
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0), atol=1e-6)
    samples = loaded.decoder.predict(np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32), verbose=0)
    assert samples.shape == (4, *SHAPE) and 0 <= samples.min() and samples.max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_and_decoder_convert_to_builtin_tflite_with_parity(kind):
    from ai_edge_litert.interpreter import Interpreter

    model = _build(kind)
    for name in ("encoder", "decoder"):
        part = model.get_layer(name)
        inputs = keras.Input(part.input_shape[1:], batch_size=1)
        fixed = keras.Model(inputs, part(inputs))
        converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        interpreter = Interpreter(model_content=converter.convert())
        interpreter.allocate_tensors()
        x = _images(1) if name == "encoder" else np.random.default_rng(2).normal(size=(1, 8)).astype(np.float32)
        runner = interpreter.get_signature_runner()
        (input_name,) = runner.get_input_details()
        got = [v for _, v in sorted(runner(**{input_name: x}).items())]
        expected = fixed.predict(x, verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        assert len(got) == len(expected) == (2 if kind == "vae" and name == "encoder" else 1)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-4)


# --- the reconstruction task through the stages (digits: 8x8 images) ----------------------

def _ae_experiment(kind, **hyperparameters):
    return {"architecture": kind, "dataset": "digits", "seed": 3,
            "hyperparameters": {"code_size": 8, **hyperparameters},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.005},
            "export": {"variants": ["float32", "float16"], "latency_runs": 3}}


@pytest.mark.parametrize("kind,extra", [("deep_autoencoder", {"hidden_units": [32]}),
                                        ("conv_autoencoder", {"filters": [8, 16]}),
                                        ("vae", {"hidden_units": [32]})])
def test_autoencoders_train_and_evaluate_on_an_image_dataset(workspace, kind, extra):
    from pipelines import config, evaluate, paths, train
    from tests.conftest import tiny_params

    params = config.validate(tiny_params(ae=_ae_experiment(kind, **extra)))
    trained = train.train("ae", params)
    assert trained["epochs_run"] == 3
    metrics = evaluate.evaluate("ae", params)
    assert 0 < metrics["test_reconstruction_mse"] < metrics["test_noisy_reconstruction_mse"] < 1
    for picture in ("reconstructions.png", "denoising.png", "latent_map.png"):
        assert (paths.eval_dir("ae") / "plots" / picture).exists()
    model = keras.models.load_model(paths.train_dir("ae") / "model.keras")
    _the_classifier_reads_the_encoders_codes(model, metrics)
    if kind == "vae":
        assert (paths.eval_dir("ae") / "plots" / "vae_samples.png").exists()
        assert metrics["test_elbo"] == pytest.approx(_monte_carlo_elbo(model), rel=0.03)
    table = (paths.eval_dir("ae") / "predictions.csv").read_text().splitlines()
    assert table[0] == "reconstruction_mse" and len(table) == 1 + metrics["test_examples"]


def _test_images():
    from pipelines import datasets, paths, tasks

    splits = datasets.load("digits", 10, paths.tfds_dir("digits"))
    return tasks.get("reconstruction").labelled(splits.train), tasks.get("reconstruction").labelled(splits.test)


def _the_classifier_reads_the_encoders_codes(model, metrics) -> None:
    """The reported accuracies are those of a logistic regression fitted here, independently,
    on the saved encoder's codes and on the pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (train_x, train_y), (test_x, test_y) = _test_images()
    code = keras.Model(model.get_layer("encoder").inputs, model.get_layer("encoder").outputs[0])
    for name, features in (("code", lambda x: code.predict(x, verbose=0)), ("pixel", lambda x: x)):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
        classifier.fit(features(train_x).reshape(len(train_x), -1), train_y)
        accuracy = classifier.score(features(test_x).reshape(len(test_x), -1), test_y)
        assert metrics[f"{name}_classifier_accuracy"] == pytest.approx(accuracy, abs=1e-9), name


def _monte_carlo_elbo(model, draws: int = 20) -> float:
    """The test ELBO computed with NumPy from the encoder's and decoder's outputs: the mean
    over images of E_q[log p(x|z)] - beta KL(q(z|x) || N(0, I)), q's expectation over `draws`
    codes per image (the model's own figure samples one code per image)."""
    (_, _), (x, _) = _test_images()
    mean, log_var = (np.asarray(v, np.float64) for v in model.encoder.predict(x, verbose=0))
    flat = x.reshape(len(x), -1).astype(np.float64)
    rng = np.random.default_rng(0)
    reconstruction = 0.0
    for _ in range(draws):
        z = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
        r = np.clip(model.decoder.predict(z.astype(np.float32), verbose=0).reshape(len(x), -1), 1e-7, 1 - 1e-7)
        reconstruction += np.mean(np.sum(flat * np.log(r) + (1 - flat) * np.log(1 - r), axis=1)) / draws
    kl = np.mean(-0.5 * np.sum(1 + log_var - mean ** 2 - np.exp(log_var), axis=1))
    return float(reconstruction - model.beta * kl)


def test_the_task_follows_from_the_dataset_and_the_architecture():
    from pipelines import config
    from tests.conftest import tiny_params

    params = config.validate(tiny_params(ae=_ae_experiment("autoencoder")))
    assert config.task_name(params.experiments["ae"]) == "reconstruction"
    assert config.task_name(params.experiments["mlp"]) == "image_classification"
    on_sequences = {**_ae_experiment("autoencoder"), "dataset": "japanese_vowels"}
    with pytest.raises(config.ParamsError, match="experiments.ae.architecture: 'autoencoder' does not do "
                       "sequence_classification \\(dataset 'japanese_vowels' serves sequence_classification\\)"):
        config.validate(tiny_params(("japanese_vowels",), ae=on_sequences))
    with pytest.raises(config.ParamsError, match="experiments.ae.export.variants: 'autoencoder' exports an "
                       "encoder and a decoder, which have no int8 variant"):
        config.validate(tiny_params(ae={**_ae_experiment("autoencoder"), "export": {}}))


@pytest.mark.parametrize("kind,extra", [("deep_autoencoder", {"hidden_units": [32]}), ("vae", {"hidden_units": [32]})])
def test_autoencoder_halves_export_with_parity_and_run_on_the_edge_runner(workspace, kind, extra, capsys):
    from pipelines import config, export, paths, train
    from tests.conftest import tiny_params

    experiment = {**_ae_experiment(kind, **extra), "export": {"variants": ["float32", "float16"], "latency_runs": 3}}
    params = config.validate(tiny_params(ae=experiment))
    train.train("ae", params)
    exported = export.export("ae", params)
    assert exported["tflite_float32_max_abs_diff"] <= 1e-4
    assert abs(exported["tflite_float32_reconstruction_mse_delta"]) < 1e-6
    folder = paths.export_dir("ae") / "tflite"
    assert sorted(f.name for f in folder.iterdir()) == [
        "float16_decoder.tflite", "float16_encoder.tflite", "float32_decoder.tflite", "float32_encoder.tflite",
        "labels.txt"]
    # the edge runner: reconstructions and their errors as Keras computes them; samples
    import keras

    from edge import runner
    model = keras.models.load_model(paths.train_dir("ae") / "model.keras")
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    np.save(paths.export_dir("ae") / "images.npy", images[..., 0])          # no channel axis: reshaped
    out = paths.export_dir("ae") / "out.npy"
    capsys.readouterr()                                                      # training's output
    assert runner.main(["reconstruct", str(folder), str(paths.export_dir("ae") / "images.npy"),
                        "--output", str(out)]) == 0
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-4)
    printed = [float(v) for v in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, ((expected - images) ** 2).mean(axis=(1, 2, 3)), rtol=1e-3)
    # samples: the decoder's file on codes drawn from N(0, I) with --seed, as Keras decodes them
    decoder = model.get_layer("decoder")
    for seed in (0, 7):
        assert runner.main(["sample", str(folder), "5", "--seed", str(seed), "--output", str(out)]) == 0
        codes = np.random.default_rng(seed).standard_normal((5, decoder.input_shape[-1])).astype(np.float32)
        np.testing.assert_allclose(np.load(out), decoder.predict(codes, verbose=0), atol=1e-4)
    assert not np.allclose(np.load(out), decoder.predict(np.random.default_rng(0).standard_normal(
        (5, decoder.input_shape[-1])).astype(np.float32), verbose=0), atol=1e-3)   # the seed matters
    assert runner.main(["reconstruct", str(folder), str(paths.export_dir("ae") / "out.npy"), "--variant", "int8"]) == 1
    assert "int8_encoder.tflite" in capsys.readouterr().err
    # `make bench`'s latency table times both halves (untrained experiments are skipped)
    from pipelines import bench
    row = bench.inference(params)[0].set_index("experiment").loc["ae"]
    assert row["keras ms"] > 0 and row["float32 ms"] > 0 and row["float16 ms"] > 0


def test_one_class_anomaly_detection_scores_each_class_against_the_rest(workspace):
    import json

    from pipelines import anomaly, config, paths
    from tests.conftest import tiny_params

    doc = tiny_params()
    doc["anomaly"] = {"architecture": "deep_autoencoder", "dataset": "digits", "classes": [0, 1], "seed": 3,
                      "hyperparameters": {"code_size": 4, "hidden_units": [32]},
                      "training": {"epochs": 30, "batch_size": 32, "learning_rate": 0.005,
                                   "early_stopping_patience": 0},
                      "threshold_percentile": 90}
    results = anomaly.run(config.validate(doc))
    assert list(results["class"]) == [0, 1]
    assert (results["train_images"] < 200).all()          # one class of digits' ~1,300 training images
    assert (results["roc_auc"] > 0.7).all()               # digits: a class's autoencoder knows its class
    assert (results["false_positive_rate"] < 0.35).all() and (results["detection_rate"] > 0.3).all()
    metrics = json.loads((paths.ANOMALY / "metrics.json").read_text())
    assert metrics["anomaly_roc_auc_mean"] == pytest.approx(results["roc_auc"].mean())
    assert (paths.ANOMALY / "roc_auc.png").exists() and "mean ROC-AUC" in (paths.ANOMALY / "anomaly.md").read_text()


def test_anomaly_classes_are_each_once_and_in_the_dataset(workspace):
    from pipelines import anomaly, config, runtime
    from tests.conftest import tiny_params

    doc = {**tiny_params(), "anomaly": {"architecture": "autoencoder", "dataset": "digits", "classes": [1, 1],
                                        "seed": 3,
                                        "hyperparameters": {"code_size": 4},
                                        "training": {"epochs": 1, "batch_size": 32, "learning_rate": 0.01}}}
    with pytest.raises(config.ParamsError, match=r"anomaly.classes: each class once \(got \[1, 1\]\)"):
        config.validate(doc)
    doc["anomaly"]["classes"] = [10]
    with pytest.raises(runtime.StageError, match="anomaly.classes: digits has classes 0-9 \\(got 10\\)"):
        anomaly.run(config.validate(doc))


def test_anomaly_needs_an_autoencoder():
    from pipelines import config
    from tests.conftest import tiny_params

    doc = tiny_params()
    doc["anomaly"] = {"architecture": "mlp", "dataset": "digits", "classes": [0], "seed": 3, "hyperparameters": {},
                      "training": {"epochs": 1, "batch_size": 32, "learning_rate": 0.005}}
    with pytest.raises(config.ParamsError, match="anomaly.architecture: 'mlp' does not do reconstruction"):
        config.validate(doc)


def test_without_anomaly_params_the_stage_writes_empty_outputs(workspace):
    import json

    from pipelines import anomaly, config, paths
    from tests.conftest import tiny_params

    assert anomaly.run(config.validate(tiny_params())).empty
    assert json.loads((paths.ANOMALY / "metrics.json").read_text()) == {"classes": 0}
    assert (paths.ANOMALY / "roc_auc.png").exists() and (paths.ANOMALY / "results.csv").read_text().startswith("class,")
