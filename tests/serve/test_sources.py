"""Indexes and id -> image maps the service opens, and its command line."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import keras_hash
from keras_hash.recipes import cifar
from keras_hash.serve import __main__ as cli
from keras_hash.serve import sources
from keras_hash.serve.sources import ImageCatalog, check_catalog
from tests.serve.conftest import image_bytes


def test_listing_catalog(tmp_path):
    lines = [{"id": 2**62 + 1, "path": "/x/a.png"}, {"id": -3, "path": "/x/b.png"}]
    listing = tmp_path / "images.jsonl"
    listing.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    for source in (listing, tmp_path):  # the file, or bulk encoding's folder
        catalog = ImageCatalog.from_source(str(source))
        assert len(catalog) == 2 and catalog.path(2**62 + 1) == "/x/a.png"
    with pytest.raises(KeyError, match="id 7 has no image"):
        catalog.path(7)
    listing.write_text('{"id": 1, "path": "a"}\n{"id": "x"}\n')
    with pytest.raises(ValueError, match="line 2"):
        ImageCatalog.from_source(str(listing))
    listing.write_text('{"id": 1, "path": "a"}\n{"id": 1, "path": "b"}\n')
    with pytest.raises(ValueError, match="the same id is listed twice"):
        ImageCatalog.from_source(str(listing))


def test_check_catalog_catches_a_wrong_map(world):
    service_codes = dict(zip(world["ids"].tolist(), world["codes"], strict=True))

    def codes_of(ids):
        return np.stack([service_codes[int(i)] for i in ids])

    encoder = world["encoder"]
    check_catalog(world["catalog"], codes_of, encoder.encode, encoder.image_shape)
    ids = world["ids"]
    paths = [world["catalog"].path(i) for i in ids]
    shifted = ImageCatalog(ids, paths[1:] + paths[:1], "a shifted map")
    with pytest.raises(ValueError, match="a shifted map do not match the index"):
        check_catalog(shifted, codes_of, encoder.encode, encoder.image_shape)


def test_run_catalog_maps_ids_to_the_runs_database_images(tmp_path):
    rng = np.random.default_rng(0)
    for part, count in (("train", 4), ("test", 2)):
        for name in cifar.CIFAR10_CLASSES:
            folder = tmp_path / "data" / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                (folder / f"{i:04d}.png").write_bytes(image_bytes(pixels))
    config = {
        "protocol": "dhn",
        "seed": 3,
        "query_per_class": 1,
        "train_per_class": 2,
        "database_size": 15,
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": config, "map": 0.5}))
    catalog = sources.run_catalog(str(run), str(tmp_path / "data"))
    # What the pipeline indexed: pool images (loaded its way) at split.database.
    train, test = cifar.load_cifar10(str(tmp_path / "data"))
    images, _ = cifar.pool(train, test)
    split = cifar.split_indices(
        train[1],
        test[1],
        **{k: v for k, v in config.items() if k != "protocol"},
        protocol="dhn",
    )
    assert len(catalog) == len(split.database) == 15
    for image_id, pool_index in enumerate(split.database):
        with open(catalog.path(image_id), "rb") as file:
            np.testing.assert_array_equal(
                np.asarray(Image.open(file)), images[pool_index]
            )
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        sources.run_catalog(str(tmp_path), str(tmp_path / "data"))


def test_open_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index at"):
        sources.open_index(str(tmp_path / "missing.khi"))
    (tmp_path / "junk.khi").write_text("not an index")
    with pytest.raises(ValueError):
        sources.open_index(str(tmp_path / "junk.khi"))
    with pytest.raises(ValueError, match="needs a collection"):
        sources.open_index("milvus:./codes.db", bits=32)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run=runs/cifar"], "--run needs --data_dir"),
        (["--model=m"], "give --run, or --index"),
        (["--index=db.khi"], "give one of --model and --tf_serving"),
        (["--run=r", "--data_dir=d", "--index=x"], "--run sets the index"),
    ],
)
def test_command_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse(argv)
    assert message in capsys.readouterr().err


def test_command_line_builds_the_app(world):
    from fastapi.testclient import TestClient

    args = cli.parse(
        [
            f"--model={world['root'] / 'models' / 'tiny'}",
            f"--index={world['index_path']}",
            f"--images={world['root'] / 'images'}",
        ]
    )
    with TestClient(cli.build(args)) as client:
        info = client.get("/api/info").json()
    assert info["index"]["size"] == 40 and info["images"]["count"] == 40


def fake_run(world, tmp_path, seed):
    """A run folder as examples/train_cifar.py leaves it, over 16x16 images:
    database.index holds the codes of the split's database images, ids 0.."""
    rng = np.random.default_rng(0)
    for part, count in (("train", 3), ("test", 1)):
        for name in cifar.CIFAR10_CLASSES:
            folder = tmp_path / "data" / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                (folder / f"{i:04d}.png").write_bytes(image_bytes(pixels))
    train, test = cifar.load_cifar10(str(tmp_path / "data"))
    images, _ = cifar.pool(train, test)
    config = {"protocol": "cifar10-2", "seed": seed, "database_size": 25}
    split = cifar.split_indices(train[1], test[1], **config)
    run = tmp_path / "run"
    (run / "serving").mkdir(parents=True)
    shutil.copytree(world["root"] / "models" / "tiny", run / "serving" / "hashnet")
    index = keras_hash.HammingIndex(32)
    index.add(world["model"].encode(images[split.database]))
    index.save(run / "database.index")
    return run, images[split.database]


def test_command_line_serves_a_run_folder(world, tmp_path):
    from fastapi.testclient import TestClient

    run, database = fake_run(world, tmp_path, seed=4)
    (run / "metrics.json").write_text(
        json.dumps(
            {"config": {"protocol": "cifar10-2", "seed": 4, "database_size": 25}}
        )
    )
    args = cli.parse([f"--run={run}", f"--data_dir={tmp_path / 'data'}"])
    with TestClient(cli.build(args)) as client:
        assert client.get("/api/info").json()["index"]["size"] == 25
        for image_id in (0, 11, 24):
            thumbnail = client.get(f"/api/images/{image_id}/thumbnail").content
            np.testing.assert_array_equal(
                np.asarray(Image.open(io.BytesIO(thumbnail))), database[image_id]
            )
    # metrics.json of another seed: another split, refused at start
    (run / "metrics.json").write_text(
        json.dumps(
            {"config": {"protocol": "cifar10-2", "seed": 5, "database_size": 25}}
        )
    )
    with pytest.raises(ValueError, match="do not match the index"):
        cli.build(args)
