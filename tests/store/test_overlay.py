"""Partition overlays: ``repartition`` writes a small file; ``fedimage.open(store, partition=...)``
reads the overlay's clients from the store's own bytes, in every reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import fast_options

import fedimage
from fedimage import ImageOptions, PartitionOptions, StoreError, convert, open_source
from fedimage.cli import main
from fedimage.sources.sample import sample_manifest
from fedimage.store.overlay import OVERLAY_METADATA, read_overlay

DIRICHLET = PartitionOptions("dirichlet", num_clients=10, alpha=0.3, min_per_client=5, seed=3)


@pytest.fixture(scope="module", params=["jpeg", "raw"])
def sample_store(request, tmp_path_factory) -> Path:
    """The embedded Open Clip Art sample (300 images, 12 authors, skewed labels) at 32 px."""
    path = tmp_path_factory.mktemp("overlay") / f"sample-{request.param}.h5"
    options = fast_options(image=ImageOptions(size=32, storage=request.param))
    convert(open_source(sample_manifest()), path, options)
    return path


def stored_images(store: fedimage.FederatedStore) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """Each image id's stored bytes (JPEG file or raw pixels) and its coarse and fine targets."""
    found = {}
    for split in store.splits:
        for user_id in store.users(split):
            data = store.load_user(split, user_id)
            encoded = (
                store.encoded_images(split, user_id)
                if store.storage == "jpeg"
                else [image.tobytes() for image in data.images]
            )
            for index, image_id in enumerate(data.image_ids):
                found[image_id] = (encoded[index], data.labels[index], data.fine_labels[index])
    return found


def test_overlay_clients_read_the_stores_own_bytes(sample_store: Path, tmp_path: Path):
    report = fedimage.repartition(sample_store, tmp_path / "parts.parquet", DIRICHLET)
    assert sum(info["images"] for info in report.splits.values()) == 300
    assert sum(info["clients"] for info in report.splits.values()) == 10
    with fedimage.open(sample_store) as base:
        expected = stored_images(base)
    with fedimage.open(sample_store, partition=report.path) as overlay:
        assert overlay.partition == report.path and "partition parts.parquet" in repr(overlay)
        assert overlay.num_images() == 300
        assert all(count >= 5 for split in overlay.splits for count in overlay.users(split).values())
        got = stored_images(overlay)
        for split in overlay.splits:
            for client in overlay.users(split):
                data = overlay.load_user(split, client)
                assert data.image_ids == sorted(data.image_ids)
                assert np.array_equal(overlay.load_image(split, client, len(data) - 1), data.images[-1])
                labels = list(overlay.iter_user_labels("fine", [split]))
                assert sum(user.count for user in labels) == overlay.num_images(split)
    assert got.keys() == expected.keys()
    for image_id, (encoded, coarse, fine) in expected.items():
        assert got[image_id][0] == encoded  # byte-identical images
        assert np.array_equal(got[image_id][1], coarse) and np.array_equal(got[image_id][2], fine)


def test_the_overlay_file_is_a_plain_table_that_says_how_it_was_made(sample_store: Path, tmp_path: Path):
    fedimage.repartition(sample_store, tmp_path / "a.parquet", DIRICHLET)
    fedimage.repartition(sample_store, tmp_path / "b.parquet", DIRICHLET)
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column_names == ["image_id", "split", "client"]
    assert table.equals(pq.read_table(tmp_path / "b.parquet"))  # same store and seed, same overlay
    info = json.loads(table.schema.metadata[OVERLAY_METADATA])
    assert info["format"] == "fedimage-partition" and info["version"] == 1
    assert info["scheme"]["scheme"] == "dirichlet" and info["scheme"]["alpha"] == 0.3 and info["seed"] == 3
    assert info["store"]["name"] == sample_store.name and len(info["store"]["fingerprint"]) == 64
    other = fedimage.repartition(sample_store, tmp_path / "c.parquet", PartitionOptions("iid", 10, seed=4))
    assert not pq.read_table(other.path).equals(table)


def test_an_overlay_of_another_store_or_with_unknown_images_is_refused(
    sample_store: Path, tmp_path: Path, flair_folder: Path
):
    parts = fedimage.repartition(sample_store, tmp_path / "parts.parquet", DIRICHLET).path
    other = tmp_path / "flair.h5"
    convert(open_source(flair_folder), other, fast_options(image=ImageOptions(size=32)))
    with pytest.raises(StoreError, match=f"was made for {sample_store.name} .*not for flair.h5"):
        fedimage.open(other, partition=parts)
    table = pq.read_table(parts)
    ids = table.column("image_id").to_pylist()
    ids[0] = "not-an-image"
    forged = table.set_column(0, "image_id", pa.array(ids))
    pq.write_table(forged, tmp_path / "forged.parquet")
    with pytest.raises(StoreError, match=r"names 1 images that .* does not have \(e.g. 'not-an-image'\)"):
        fedimage.open(sample_store, partition=tmp_path / "forged.parquet")
    pq.write_table(
        pa.table({"image_id": ["a"], "split": ["train"], "client": ["c"]}), tmp_path / "plain.parquet"
    )
    with pytest.raises(StoreError, match="is not a fedimage partition overlay"):
        read_overlay(tmp_path / "plain.parquet")
    duplicated = pa.concat_tables([table.slice(0, 1), table])
    pq.write_table(duplicated, tmp_path / "twice.parquet")
    with pytest.raises(StoreError, match="appears more than once"):
        read_overlay(tmp_path / "twice.parquet")
    with pytest.raises(StoreError, match="already exists"):
        fedimage.repartition(sample_store, parts, DIRICHLET)


def test_torch_and_flower_readers_take_the_overlay(sample_store: Path, tmp_path: Path):
    torch = pytest.importorskip("torch")
    from fedimage.loaders.flower import StorePartitioner
    from fedimage.loaders.torch_datasets import SplitDataset, UserDataset

    parts = fedimage.repartition(sample_store, tmp_path / "parts.parquet", DIRICHLET).path
    with fedimage.open(sample_store, partition=parts) as overlay:
        client, count = next(iter(overlay.users("train").items()))
        expected = overlay.load_user("train", client)
        partitioner = StorePartitioner(overlay, "train")
        assert partitioner.num_partitions == len(overlay.users("train"))
    dataset = UserDataset(sample_store, "train", client, partition=parts)
    assert len(dataset) == count
    _, target = dataset[0]
    assert torch.equal(target, torch.from_numpy(expected.labels[0]))
    split = SplitDataset(sample_store, "train", partition=parts)
    assert len(split) == sum(fedimage.open(sample_store, partition=parts).users("train").values())
    import pickle

    revived = pickle.loads(pickle.dumps(split))  # a DataLoader worker reopens the store with its overlay
    assert revived.user_of(0) == split.user_of(0) and torch.equal(revived[0][1], split[0][1])
    from fedimage.federation.client_data import SimulationDirectory  # Flower's simulated clients

    directory = pickle.loads(pickle.dumps(SimulationDirectory(sample_store, None, ("train",), parts)))
    assert [user for _, user in directory.clients] == sorted(
        fedimage.open(sample_store, partition=parts).users("train")
    )
    images, targets = directory.client_data(directory.clients.index(("train", client))).arrays("coarse")
    assert np.array_equal(images, expected.images) and np.array_equal(targets, expected.labels)


def test_command_line_repartition_and_report(sample_store: Path, tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    for alpha in ("0.1", "10"):
        argv = ["repartition", str(sample_store), "-o", str(tmp_path / f"alpha-{alpha}.parquet")]
        argv += ["--partition", "dirichlet", "--num-clients", "8", "--alpha", alpha, "--min-per-client", "5"]
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "train" in out and "clients /" in out
    argv = ["report", str(sample_store), "-o", str(tmp_path / "report")]
    argv += [
        "--partition",
        str(tmp_path / "alpha-0.1.parquet"),
        "--partition",
        str(tmp_path / "alpha-10.parquet"),
    ]
    assert main(argv) == 0
    stats = json.loads((tmp_path / "report" / "stats.json").read_text())
    names = [store["name"] for store in stats["stores"]]
    assert names == ["alpha-0.1", "alpha-10"]
    hellinger = {s["name"]: s["summary"]["coarse"]["hellinger"]["mean"] for s in stats["stores"]}
    assert hellinger["alpha-0.1"] > hellinger["alpha-10"]
    capsys.readouterr()
    assert (
        main(["inspect", str(sample_store), "--partition", str(tmp_path / "alpha-0.1.parquet"), "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    with fedimage.open(sample_store, partition=tmp_path / "alpha-0.1.parquet") as overlay:
        assert {split: info["users"] for split, info in summary["splits"].items()} == {
            split: len(overlay.users(split)) for split in overlay.splits
        }
        shares = {split: info["images"] for split, info in summary["split_balance"].items()}
        assert shares == {split: overlay.num_images(split) for split in overlay.splits}
    assert (
        main(
            [
                "repartition",
                str(sample_store),
                "-o",
                str(tmp_path / "alpha-0.1.parquet"),
                "--partition",
                "iid",
            ]
        )
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err


def test_an_encrypted_store_is_re_partitioned_and_read_with_its_key(tmp_path: Path):
    from fedimage.privacy import load_key
    from fedimage.privacy.pseudonyms import generate_key_file

    key = tmp_path / "store.key"
    generate_key_file(key)
    store = tmp_path / "sealed.h5"
    options = fast_options(image=ImageOptions(size=32, color="gray"), encrypt_key=load_key(key))
    convert(open_source(sample_manifest()), store, options)
    parts = fedimage.repartition(store, tmp_path / "parts.parquet", DIRICHLET, key=key).path
    with fedimage.open(store, key=key) as base:
        expected = stored_images(base)
    with fedimage.open(store, key=key, partition=parts) as overlay:
        got = stored_images(overlay)
        assert overlay.encrypted and overlay.channels == 1 and len(overlay.users("train")) >= 1
    assert got.keys() == expected.keys() and all(got[i][0] == expected[i][0] for i in expected)
