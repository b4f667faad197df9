"""The small parts of a federation: the server's step, the recipe record, a bundle's client, options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options

from fedimage import ImageOptions, convert, open_source
from fedimage.errors import OptionError

pytest.importorskip("flwr")
pytest.importorskip("cryptography")

from fedimage.federation import make_kits, protocol
from fedimage.federation.aggregation import GaussianNoise, ServerOptimizer, mean_delta
from fedimage.federation.client_data import client_data_from_node
from fedimage.federation.node import ClientOptions, refusal
from fedimage.federation.serve import ServeOptions


def test_fedadam_is_flairs_server_adam_as_flower_computes_it():
    """x + eta_t m / (sqrt(v) + tau), eta_t = eta sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)), t from 0."""
    eta, tau, (b1, b2) = 0.1, 0.01, (0.9, 0.99)
    optimizer = ServerOptimizer("fedadam", eta, tau, (b1, b2))
    x = np.array([1.0, -2.0, 0.5])
    deltas = [np.array([0.1, -0.3, 0.0]), np.array([-0.2, 0.1, 0.05])]
    m = v = np.zeros(3)
    expected = x.copy()
    for t, d in enumerate(deltas):
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d**2
        expected = expected + eta * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) * m / (np.sqrt(v) + tau)
        x = optimizer.step(x, d)
    np.testing.assert_allclose(x, expected)
    np.testing.assert_array_equal(ServerOptimizer("fedavg").step(np.ones(2), np.array([0.5, -1])), [1.5, 0])
    with pytest.raises(OptionError, match="`strategy` must be one of fedavg, fedadam"):
        ServerOptimizer("fedprox")


def test_mean_delta_divides_by_the_cohort_with_dp_and_by_the_contributors_without():
    total = np.array([3.0, 6.0])
    np.testing.assert_array_equal(mean_delta(total, 3, 4, None), [1.0, 2.0])
    noise = GaussianNoise(1.0, 0.5, seed=1)
    np.testing.assert_array_equal(mean_delta(total, 3, 4, noise), [0.75, 1.5])
    noisy = noise.add(np.zeros(10_000), 1)
    assert abs(noisy.std() - 0.5) < 0.02
    np.testing.assert_array_equal(noisy, noise.add(np.zeros(10_000), 1))  # seeded: reproducible
    assert not np.array_equal(noisy, noise.add(np.zeros(10_000), 2))  # fresh each round
    with pytest.raises(OptionError, match="at least one contributing client"):
        mean_delta(total, 0, 4, None)


def test_the_recipe_travels_as_a_config_record():
    from flwr.app import ConfigRecord

    recipe = protocol.Recipe(model="cnn", num_outputs=5, crop=24, max_grad_norm=None, dp_clip=0.5)
    record = ConfigRecord(recipe.to_record())
    assert protocol.Recipe.from_record(record) == recipe
    assert (
        protocol.Recipe.from_record(ConfigRecord({"model": "cnn", "num_outputs": 5, "crop": 24})).lr == 0.01
    )
    with pytest.raises(OptionError, match="the server's recipe has no 'crop'"):
        protocol.Recipe.from_record(ConfigRecord({"model": "cnn", "num_outputs": 5}))


def test_a_deployed_client_reads_only_its_bundle(flair_folder: Path, tmp_path: Path):
    store = tmp_path / "store.h5"
    convert(open_source(flair_folder), store, fast_options(image=ImageOptions(size=28)))
    make_kits(store, tmp_path / "kits", "127.0.0.1:9092", quiet=True)
    kit = next((tmp_path / "kits" / "clients" / "val").iterdir())
    config = {protocol.NODE_BUNDLE: str(kit / "bundle.h5"), protocol.NODE_BUNDLE_KEY: str(kit / "bundle.key")}
    data = client_data_from_node(config, None)
    assert (data.client, data.split) == (kit.name, "val")
    images, targets = data.arrays("coarse", 1)
    assert images.shape == (1, 28, 28, 3) and targets.shape[0] == 1
    with pytest.raises(OptionError, match="no 'bundle-key'"):
        client_data_from_node({protocol.NODE_BUNDLE: str(kit / "bundle.h5")}, None)
    with pytest.raises(OptionError, match=r"neither 'bundle' .*fedimage client KIT"):
        client_data_from_node({}, None)
    other = next((tmp_path / "kits" / "clients" / "test").iterdir())
    with pytest.raises(Exception, match="key"):  # another site's key does not open this bundle
        client_data_from_node({**config, protocol.NODE_BUNDLE_KEY: str(other / "bundle.key")}, None)


@pytest.mark.parametrize(
    ("log", "cause"),
    [
        (
            "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]",
            "not signed by this kit's authority",
        ),
        ("Exit Code: 2004\nSuperNode is not registered", "does not know this node's key"),
        ("[Errno 111] Connection refused", "no server answers"),
    ],
)
def test_a_refused_node_gets_one_line_naming_the_cause(log: str, cause: str):
    line = refusal("site-a", "fl.example.org:9092", log, 1)
    assert line.startswith("client site-a could not join fl.example.org:9092: ") and cause in line
    assert "\n" not in line
    unknown = refusal("site-a", "h:1", "something\nelse happened\n", 3)
    assert unknown == "client site-a: the SuperNode exited with code 3 before the run ended: else happened"


def test_options_are_checked_before_anything_starts():
    with pytest.raises(OptionError, match="`address` must be HOST:PORT"):
        ServeOptions(address="9092")
    with pytest.raises(OptionError, match=r"`insecure` .* must be a loopback address"):
        ServeOptions(address="0.0.0.0:9092", insecure=True)
    with pytest.raises(OptionError, match="`min_clients` must be >= 1"):
        ServeOptions(min_clients=0)
    with pytest.raises(OptionError, match="`round_timeout` must be > 0"):
        ServeOptions(round_timeout=0)
    with pytest.raises(OptionError, match=r"`insecure` .* needs a loopback `server`"):
        ClientOptions(insecure=True)
    with pytest.raises(OptionError, match="`max_retries` must be >= 1"):
        ClientOptions(max_retries=0)
    ServeOptions(address="127.0.0.1:9092", insecure=True)


def test_the_commands_name_their_defaults(capsys):
    from fedimage.cli import main

    for command in ("serve", "client"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: 0.0.0.0:9092)" in text and "(default: 600.0)" in text and "(default: 300.0)" in text
