"""``fedimage kits``: a CA, a server kit and one kit per client for a real Flower deployment."""

from __future__ import annotations

import ipaddress
import json
import stat
import tomllib
from pathlib import Path

import numpy as np
import pytest
from helpers import flair_store, photo, save_image, write_jsonl

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.cli import main
from fedimage.errors import OptionError, StoreError
from fedimage.exports.names import safe_name
from fedimage.federation import (
    KitsReport,
    NodeConfig,
    make_kits,
    read_node_config,
    read_server_settings,
)
from fedimage.federation.kits import dump_toml_table, parse_server, toml_string

pytest.importorskip("cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

SERVER = "fl.example.org:9092"
CLIENT_FILES = {"bundle.h5", "bundle.key", "ca.crt", "node.key", "node.pub", "node.toml"}
ODD_ID = 'a "quoted" \\ user/ünï\tcode ✓'


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings (``.kits.*.partial``, ``.kits.replaced-*``) left in ``folder``."""
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(flair_folder: Path, tmp_path: Path) -> Path:
    """FLAIR's miniature: 6 users (4 train, 1 val, 1 test), 14 images."""
    return flair_store(flair_folder, tmp_path / "flair.h5")


@pytest.fixture
def kits(store: Path, tmp_path: Path) -> tuple[Path, KitsReport]:
    destination = tmp_path / "kits"
    return destination, make_kits(store, destination, SERVER, server_names=["10.1.2.3"], quiet=True)


def odd_store(root: Path, key: Path | None = None) -> Path:
    """Two users, one with an id full of quotes, a backslash, a tab and non-ASCII characters."""
    rows = []
    for index, user in enumerate([ODD_ID, "plain"]):
        for number in range(index + 1):
            save_image(root / "images" / f"{index}-{number}.png", photo(24, 24, seed=10 * index + number))
            rows.append(
                {
                    "image": f"images/{index}-{number}.png",
                    "user_id": user,
                    "image_id": f"{index}-{number}",
                    "labels": ["animal"],
                    "partition": "train",
                }
            )
    path = root / "odd.h5"
    options = fedimage.ConvertOptions(
        image=ImageOptions(size=16), workers=1, quiet=True, overwrite=True, encrypt_key=key
    )
    convert(open_source(write_jsonl(root / "manifest.jsonl", rows)), path, options)
    return path


def test_the_layout_is_exact_with_private_modes(kits, store):
    destination, report = kits
    with fedimage.open(store) as opened:
        users = {split: opened.users(split) for split in opened.splits}
    assert report.clients == 6 and report.images == 14 and report.destination == destination
    assert report.splits == {
        split: {"clients": len(ids), "images": sum(ids.values())} for split, ids in users.items()
    }
    expected = {"kits.json", "authority/ca.crt", "authority/ca.key", "server/ca.crt", "server/server.crt"}
    expected |= {"server/server.key", "server/settings.json"}
    for split, ids in users.items():
        for user in ids:
            expected.add(f"server/nodes/{split}/{safe_name(user)}.pub")
            expected |= {f"clients/{split}/{safe_name(user)}/{name}" for name in CLIENT_FILES}
    found = {str(path.relative_to(destination)) for path in destination.rglob("*") if path.is_file()}
    assert found == expected
    assert leftovers(destination.parent) == []
    for private in ["authority/ca.key", "server/server.key"]:
        assert mode(destination / private) == 0o600
    assert mode(destination / "authority") == 0o700 and mode(destination / "server") == 0o700
    for kit in (destination / "clients").glob("*/*"):
        assert mode(kit) == 0o700
        assert mode(kit / "bundle.key") == 0o600 and mode(kit / "node.key") == 0o600
    summary = json.loads((destination / "kits.json").read_text())
    assert summary == {
        "format": "fedimage-kits",
        "version": 1,
        "store": "flair.h5",
        "server": SERVER,
        "created_by": f"fedimage {fedimage.__version__}",
        "splits": report.splits,
    }
    text = report.summary()
    assert "train 4 clients" in text and "val 1 client," in text and str(destination) in text


def test_the_server_kit_lists_every_client_and_holds_no_data(kits, store):
    destination, _ = kits
    server = destination / "server"
    assert not list(server.rglob("*.h5")) and not list(server.rglob("bundle*"))
    assert [path.name for path in server.rglob("*.key")] == ["server.key"]
    settings = json.loads((server / "settings.json").read_text())
    with fedimage.open(store) as opened:
        assert settings["storage"] == opened.storage and settings["image_size"] == opened.image_size
        assert settings["label_names"] == {"coarse": opened.label_names, "fine": opened.fine_label_names}
        assert settings["clients"] == {
            split: [
                {"client": user, "images": count, "public_key": f"nodes/{split}/{safe_name(user)}.pub"}
                for user, count in opened.users(split).items()
            ]
            for split in opened.splits
        }
    assert settings["format"] == "fedimage-server-kit" and settings["version"] == 1
    assert settings["store"] == "flair.h5" and settings["server"] == SERVER
    assert settings["certificates"] == {
        "ca": "ca.crt",
        "certificate": "server.crt",
        "private_key": "server.key",
    }
    read = read_server_settings(server)
    assert read.server == SERVER and read.folder == server.absolute()
    assert read.ca_certificate == server.absolute() / "ca.crt" and read.private_key.is_absolute()
    assert read.label_names == settings["label_names"]
    assert [(c.client, c.split, c.images) for c in read.all_clients()] == [
        (entry["client"], split, entry["images"])
        for split, entries in settings["clients"].items()
        for entry in entries
    ]
    assert all(
        client.public_key.is_absolute() and client.public_key.is_file() for client in read.all_clients()
    )
    assert read_server_settings(server / "settings.json") == read


def test_each_bundle_holds_exactly_its_users_data_and_opens_only_with_its_key(kits, store):
    destination, _ = kits
    configs = [read_node_config(kit) for kit in sorted((destination / "clients").glob("*/*"))]
    assert len(configs) == 6
    with fedimage.open(store) as opened:
        for config in configs:
            with fedimage.open(config.bundle, key=config.bundle_key) as bundle:
                assert bundle.encrypted and bundle.label_names == opened.label_names
                assert {split: bundle.users(split) for split in bundle.splits} == {
                    config.split: {config.client: opened.users(config.split)[config.client]}
                }
                mine = bundle.load_user(config.split, config.client)
            theirs = opened.load_user(config.split, config.client)
            np.testing.assert_array_equal(mine.images, theirs.images)
            np.testing.assert_array_equal(mine.labels, theirs.labels)
            np.testing.assert_array_equal(mine.fine_labels, theirs.fine_labels)
            assert mine.image_ids == theirs.image_ids
    first, second = configs[:2]
    with pytest.raises(StoreError, match="wrong key"):
        fedimage.open(first.bundle, key=second.bundle_key)


def test_the_certificate_chain_verifies_for_the_server_names(kits):
    destination, _ = kits
    ca = x509.load_pem_x509_certificate((destination / "authority" / "ca.crt").read_bytes())
    server = destination / "server"
    assert (server / "ca.crt").read_bytes() == (destination / "authority" / "ca.crt").read_bytes()
    for kit in (destination / "clients").glob("*/*"):
        assert (kit / "ca.crt").read_bytes() == (server / "ca.crt").read_bytes()
    cert = x509.load_pem_x509_certificate((server / "server.crt").read_bytes())
    key = serialization.load_pem_private_key((server / "server.key").read_bytes(), None)
    ca_key = serialization.load_pem_private_key((destination / "authority" / "ca.key").read_bytes(), None)
    assert cert.public_key() == key.public_key() and ca.public_key() == ca_key.public_key()
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the names given, then the loopback names (the operator's tools reach the SuperLink locally)
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("fl.example.org"))
    verifier.verify(cert, [])


def test_node_keys_match_and_the_server_holds_the_public_ones(kits):
    destination, _ = kits
    settings = read_server_settings(destination / "server")
    for client in settings.all_clients():
        kit = destination / "clients" / client.split / safe_name(client.client)
        private = serialization.load_ssh_private_key((kit / "node.key").read_bytes(), None)
        public = serialization.load_ssh_public_key((kit / "node.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public.curve, ec.SECP384R1)
        assert private.public_key() == public
        assert client.public_key.read_bytes() == (kit / "node.pub").read_bytes()
    keys = {client.public_key.read_bytes() for client in settings.all_clients()}
    assert len(keys) == 6


def test_node_config_reads_back_with_absolute_paths(kits):
    destination, _ = kits
    kit = next((destination / "clients" / "train").iterdir())
    config = read_node_config(kit)
    assert isinstance(config, NodeConfig) and config == read_node_config(kit / "node.toml")
    assert config.split == "train" and config.server == SERVER and config.client == kit.name
    base = kit.absolute()
    assert (config.bundle, config.bundle_key, config.root_certificates) == (
        base / "bundle.h5",
        base / "bundle.key",
        base / "ca.crt",
    )
    assert (config.node_private_key, config.node_public_key) == (base / "node.key", base / "node.pub")
    raw = tomllib.loads((kit / "node.toml").read_text())
    assert raw == {
        "fedimage": {
            "client": config.client,
            "split": "train",
            "server": SERVER,
            "bundle": "bundle.h5",
            "bundle_key": "bundle.key",
            "root_certificates": "ca.crt",
            "node_private_key": "node.key",
            "node_public_key": "node.pub",
        }
    }


def test_node_config_errors_are_one_line(tmp_path, kits):
    with pytest.raises(OptionError, match="does not exist"):
        read_node_config(tmp_path / "nowhere")
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "node.toml").write_text("[fedimage]\nclient = 'x'\n")
    with pytest.raises(OptionError, match='has no "split"') as error:
        read_node_config(kit)
    assert "\n" not in str(error.value)
    (kit / "node.toml").write_text("client = \n")
    with pytest.raises(OptionError, match="not valid TOML"):
        read_node_config(kit)
    source = next((kits[0] / "clients" / "train").iterdir())
    (kit / "node.toml").write_text((source / "node.toml").read_text())
    with pytest.raises(OptionError, match=r"bundle .* does not exist"):
        read_node_config(kit)
    with pytest.raises(OptionError, match="no server kit"):
        read_server_settings(tmp_path / "nowhere")


def test_an_odd_user_id_round_trips_through_node_toml(tmp_path):
    store = odd_store(tmp_path / "src")
    destination = tmp_path / "kits"
    make_kits(store, destination, "127.0.0.1:9092", quiet=True)
    kit = destination / "clients" / "train" / safe_name(ODD_ID)
    assert kit.is_dir()
    config = read_node_config(kit)
    assert config.client == ODD_ID
    with fedimage.open(config.bundle, key=config.bundle_key) as bundle:
        assert bundle.users("train") == {ODD_ID: 1}
    settings = json.loads((destination / "server" / "settings.json").read_text(encoding="utf-8"))
    assert [entry["client"] for entry in settings["clients"]["train"]] == [ODD_ID, "plain"]
    cert = x509.load_pem_x509_certificate((destination / "server" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]


@pytest.mark.parametrize(
    "value", [ODD_ID, "", "\x00\x1f\x7f", "line\nbreak\r", '"""', "'", "\\u0041", "𝔘nicode ✓", "a\\"]
)
def test_toml_strings_round_trip(value):
    document = dump_toml_table("fedimage", {"client": value, "weird key": "x"})
    assert "\n" not in document.strip().split("\n", 1)[1].split("\n")[0]  # one line per value
    assert tomllib.loads(document) == {"fedimage": {"client": value, "weird key": "x"}}
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


@pytest.mark.parametrize(
    ("server", "host", "port"),
    [
        ("fl.example.org:9092", "fl.example.org", 9092),
        ("localhost:1", "localhost", 1),
        ("10.0.0.5:65535", "10.0.0.5", 65535),
        ("[::1]:9092", "::1", 9092),
        ("[fe80::1:2]:80", "fe80::1:2", 80),
    ],
)
def test_server_addresses(server, host, port):
    assert parse_server(server) == (host, port)


@pytest.mark.parametrize(
    "server",
    [
        "fl.example.org",
        "fl.example.org:",
        ":9092",
        "fl.example.org:0",
        "fl.example.org:65536",
        "fl.example.org:90a",
        "::1:9092",
        "[::1]9092",
        "[10.0.0.1]:9092",
        "[::1:9092",
        "bad host:9092",
        "-bad.org:9092",
        "999.1.1.1:9092",
        "a\nb:9092",
        "https://fl.example.org:9092",
    ],
)
def test_malformed_servers_are_refused_in_one_line(server, store, tmp_path):
    with pytest.raises(OptionError, match="`server`") as error:
        make_kits(store, tmp_path / "kits", server, quiet=True)
    assert "\n" not in str(error.value).replace(repr(server), "")
    assert not (tmp_path / "kits").exists()


def test_bad_server_names_splits_and_days_are_refused(store, tmp_path):
    destination = tmp_path / "kits"
    with pytest.raises(OptionError, match="`server_names`"):
        make_kits(store, destination, SERVER, server_names=["no spaces"], quiet=True)
    with pytest.raises(OptionError, match="`splits`"):
        make_kits(store, destination, SERVER, splits=["training"], quiet=True)
    with pytest.raises(OptionError, match="`validity_days`"):
        make_kits(store, destination, SERVER, validity_days=0, quiet=True)
    assert not destination.exists()


def test_overwrite_replaces_only_earlier_kits(store, tmp_path, kits):
    destination, _ = kits
    before = (destination / "authority" / "ca.key").read_bytes()
    with pytest.raises(OptionError, match=r"`destination` .* not empty; pass `overwrite`") as error:
        make_kits(store, destination, SERVER, quiet=True)
    assert "\n" not in str(error.value)
    assert (destination / "authority" / "ca.key").read_bytes() == before
    make_kits(store, destination, "other.example.org:1", overwrite=True, quiet=True)
    assert (destination / "authority" / "ca.key").read_bytes() != before
    assert read_server_settings(destination / "server").server == "other.example.org:1"
    assert leftovers(tmp_path) == []

    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work")
    with pytest.raises(OptionError, match=r"no kits\.json .* even with `overwrite`"):
        make_kits(store, other, SERVER, overwrite=True, quiet=True)
    assert (other / "thesis.txt").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match="not a folder"):
        make_kits(store, tmp_path / "file", SERVER, overwrite=True, quiet=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_kits(store, empty, SERVER, quiet=True).clients == 6


def test_a_failure_leaves_nothing_half_written(store, tmp_path, monkeypatch, kits):
    from fedimage.federation import kits as kits_module

    destination, _ = kits
    before = (destination / "authority" / "ca.key").read_bytes()
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    original = kits_module.write_user_bundle
    monkeypatch.setattr(kits_module, "write_user_bundle", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_kits(store, destination, SERVER, overwrite=True, quiet=True)
    assert (destination / "authority" / "ca.key").read_bytes() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(RuntimeError, match="disk full"):
        calls.clear()
        make_kits(store, tmp_path / "new", SERVER, quiet=True)
    assert not (tmp_path / "new").exists()


def test_an_encrypted_store_needs_its_key_and_only_train(tmp_path):
    store_key = fedimage.keygen(tmp_path / "store.key")
    store = odd_store(tmp_path / "src", key=store_key)
    with pytest.raises(StoreError, match="is encrypted"):
        make_kits(store, tmp_path / "kits", SERVER, quiet=True)
    report = make_kits(store, tmp_path / "kits", SERVER, key=store_key, splits=["train"], quiet=True)
    assert report.splits == {"train": {"clients": 2, "images": 3}}
    for kit in (tmp_path / "kits" / "clients" / "train").iterdir():
        config = read_node_config(kit)
        with pytest.raises(StoreError, match="wrong key"):
            fedimage.open(config.bundle, key=store_key)
        with fedimage.open(config.bundle, key=config.bundle_key) as bundle:
            assert list(bundle.users("train")) == [config.client]


def test_splits_train_only(store, tmp_path):
    destination = tmp_path / "kits"
    names = (name for name in ["b.example.org"])  # any iterable of names
    report = make_kits(store, destination, SERVER, splits="train", server_names=names, quiet=True)
    assert list(report.splits) == ["train"] and report.clients == 4
    cert = x509.load_pem_x509_certificate((destination / "server" / "server.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fl.example.org", "b.example.org", "localhost"]
    assert sorted(path.name for path in (destination / "clients").iterdir()) == ["train"]
    assert list(read_server_settings(destination / "server").clients) == ["train"]


def test_command_line_end_to_end(store, tmp_path, capsys):
    destination = tmp_path / "kits"
    argv = ["kits", str(store), "-o", str(destination), "--server", SERVER, "--quiet"]
    assert main([*argv, "--splits", "train,val", "--server-name", "10.0.0.9", "--server-name", "b.org"]) == 0
    out = capsys.readouterr().out
    assert "train 4 clients, val 1 client" in out and str(destination) in out
    settings = read_server_settings(destination / "server")
    assert list(settings.clients) == ["train", "val"]
    cert = x509.load_pem_x509_certificate(settings.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org", "b.org", "localhost"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--output" in err and "--overwrite" in err and "`" not in err
    assert main([*argv[:-3], "--server", "nope", "--quiet"]) == 2
    assert "--server must be HOST:PORT" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--server-name", "bad name"]) == 2
    assert "--server-name" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--splits", "nosuch"]) == 2
    assert "--splits must name" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert list(read_server_settings(destination / "server").clients) == ["train", "val", "test"]


def test_command_line_takes_the_key_of_an_encrypted_store(tmp_path, capsys):
    store_key = tmp_path / "store.key"
    assert main(["keygen", str(store_key)]) == 0
    store = odd_store(tmp_path / "src", key=store_key)
    argv = ["kits", str(store), "-o", str(tmp_path / "kits"), "--server", "[::1]:9092", "--quiet"]
    assert main(argv) == 2
    assert "--key KEYFILE" in capsys.readouterr().err
    assert main([*argv, "--key", str(store_key)]) == 0
    assert read_node_config(next((tmp_path / "kits" / "clients" / "train").iterdir())).server == "[::1]:9092"
