"""Per-site kits for a real Flower federation: one for the server, one per client of a store.

::

    DEST/
      kits.json                      what was made: store, server address, clients per split
      authority/ca.crt, ca.key       the federation's CA (folder 0700): it stays with the operator
      server/                        (folder 0700) goes to the server; no bundle, no bundle key
        ca.crt, server.crt, server.key (0600)
        nodes/{split}/{name}.pub     every client's node public key (OpenSSH)
        settings.json                store name, address, image format, labels, clients, certificates
      clients/{split}/{name}/        (folder 0700) goes to one client
        bundle.h5, bundle.key (0600) that user's data as an encrypted one-user store, and its key
        ca.crt                       to trust the server's certificate
        node.key (0600), node.pub    its node-authentication key pair
        node.toml                    [fedimage] client, split, server and the files above

``{name}`` is the user id as a portable file name (:class:`~fedimage.exports.names.NameTable`);
each client is named by its user id (a pseudonym in a pseudonymized store), never by a
position. :func:`read_node_config` and :func:`read_server_settings` read a client's and the
server's kit back, with absolute paths. Making kits needs the ``privacy`` extra.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fedimage._version import __version__
from fedimage.errors import OptionError
from fedimage.exports.base import DEFAULT_QUALITY
from fedimage.exports.client_bundles import write_user_bundle
from fedimage.exports.names import NameTable
from fedimage.exports.reading import ExportUser
from fedimage.labels import LABEL_LEVELS
from fedimage.store.reader import FederatedStore
from fedimage.store.sealing import StoreKey

KITS_FORMAT = "fedimage-kits"
SERVER_KIT_FORMAT = "fedimage-server-kit"
KITS_VERSION = 1
KITS_FILE = "kits.json"
AUTHORITY = "authority"
SERVER = "server"
CLIENTS = "clients"
NODES = "nodes"
SETTINGS_FILE = "settings.json"
NODE_CONFIG_FILE = "node.toml"
NODE_CONFIG_TABLE = "fedimage"
CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERTIFICATE = "server.crt"
SERVER_KEY = "server.key"
BUNDLE = "bundle.h5"
BUNDLE_KEY = "bundle.key"
NODE_KEY = "node.key"
NODE_PUBLIC_KEY = "node.pub"
#: The keys of ``node.toml``'s ``[fedimage]`` table, in the order they are written.
NODE_CONFIG_KEYS = (
    "client",
    "split",
    "server",
    "bundle",
    "bundle_key",
    "root_certificates",
    "node_private_key",
    "node_public_key",
)
_NODE_CONFIG_PATHS = NODE_CONFIG_KEYS[3:]
_PRIVATE_FOLDER = 0o700
#: Days the certificates of new kits stay valid.
DEFAULT_VALIDITY_DAYS = 365
_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")


# -- addresses ---------------------------------------------------------------------------------
def _host_problem(host: str) -> str | None:
    """Why ``host`` is no IP address or DNS name (None when it is one)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        return "is not a valid IPv4 address"
    if len(host) > 253 or not _DNS_NAME.fullmatch(host):
        return "is not a host name (letters, digits, '-' and '.') or an IP address"
    return None


def parse_server(server: str, parameter: str = "server") -> tuple[str, int]:
    """``"host:port"`` as (host, port); an IPv6 address goes in brackets (``"[::1]:9092"``).

    Parameters:
        server: the address clients connect to.
        parameter: the parameter named in the error message.

    Example::

        parse_server("fl.example.org:9092")  # ("fl.example.org", 9092)
    """
    if not isinstance(server, str):
        raise OptionError(f"`{parameter}` must be a HOST:PORT string, got {type(server).__name__}")
    if server.startswith("["):
        host, bracket, rest = server[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else None
        try:
            ok = port is not None and ipaddress.ip_address(host).version == 6
        except ValueError:
            ok = False
        if not ok:
            raise OptionError(f"`{parameter}` must be [IPv6]:PORT when it starts with '[', got {server!r}")
    else:
        host, colon, port = server.rpartition(":")
        if not colon or not host:
            raise OptionError(f"`{parameter}` must be HOST:PORT (e.g. fl.example.org:9092), got {server!r}")
        if ":" in host:
            raise OptionError(f"`{parameter}`: an IPv6 address goes in brackets ([::1]:9092), got {server!r}")
        problem = _host_problem(host)
        if problem:
            raise OptionError(f"`{parameter}` {server!r}: {host!r} {problem}")
    assert port is not None
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise OptionError(f"`{parameter}` {server!r}: the port must be a number from 1 to 65535")
    return host, int(port)


#: Always in the server certificate, after the names given.
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


def _check_server_names(names: Iterable[str]) -> list[str]:
    """Extra certificate names: IP addresses or DNS names (``*.`` wildcards allowed)."""
    if isinstance(names, str):
        names = [names]
    checked = []
    for name in names:
        if not isinstance(name, str):
            raise OptionError(f"`server_names` must be strings, got {type(name).__name__}")
        bare = name[2:] if name.startswith("*.") else name
        problem = _host_problem(bare) if bare else "is empty"
        if problem:
            raise OptionError(f"`server_names`: {name!r} {problem}")
        checked.append(name)
    return checked


# -- node.toml ---------------------------------------------------------------------------------
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string: quoted, with quotes, backslashes and control characters escaped."""
    out = []
    for character in value:
        if character in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[character])
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            out.append(f"\\u{ord(character):04X}")
        else:
            out.append(character)
    return f'"{"".join(out)}"'


def dump_toml_table(table: str, values: Mapping[str, str]) -> str:
    """One TOML table of string values (all that ``node.toml`` needs)."""
    lines = [f"[{table if _BARE_KEY.fullmatch(table) else toml_string(table)}]"]
    for key, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"only string values are written, got {type(value).__name__} for {key!r}")
        lines.append(f"{key if _BARE_KEY.fullmatch(key) else toml_string(key)} = {toml_string(value)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NodeConfig:
    """A client kit's ``node.toml``, its files as absolute paths (:func:`read_node_config`)."""

    client: str  #: the user id this client holds (the store's id, possibly a pseudonym)
    split: str
    server: str  #: "host:port" of the server
    bundle: Path  #: the encrypted one-user store
    bundle_key: Path  #: its key file
    root_certificates: Path  #: the CA certificate that signed the server's
    node_private_key: Path  #: OpenSSH EC private key (Flower's SuperNode authentication)
    node_public_key: Path  #: its OpenSSH public key


def read_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read a client kit's ``node.toml``; its file names become absolute paths that must exist.

    Parameters:
        path: a client kit folder, or its ``node.toml``.

    Example::

        config = read_node_config("kits/clients/train/alice")
        store = fedimage.open(config.bundle, key=config.bundle_key)
    """
    path = Path(path)
    file = path / NODE_CONFIG_FILE if path.is_dir() else path
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"no client kit at {path}: {file} does not exist") from None
    except OSError as error:
        raise OptionError(f"cannot read {file}: {error.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise OptionError(f"{file} is not valid TOML ({error})") from None
    table = document.get(NODE_CONFIG_TABLE)
    if not isinstance(table, dict):
        raise OptionError(f"{file} has no [{NODE_CONFIG_TABLE}] table")
    values: dict[str, Any] = {}
    for key in NODE_CONFIG_KEYS:
        value = table.get(key)
        if value is None:
            raise OptionError(f'{file}: [{NODE_CONFIG_TABLE}] has no "{key}"')
        if not isinstance(value, str) or not value:
            raise OptionError(f'{file}: [{NODE_CONFIG_TABLE}] "{key}" must be a non-empty string')
        values[key] = value
    try:
        parse_server(values["server"])
    except OptionError as error:
        raise OptionError(f"{file}: {str(error).replace('`server`', 'server')}") from None
    folder = file.absolute().parent
    for key in _NODE_CONFIG_PATHS:
        values[key] = _existing(folder / values[key], file, key)
    return NodeConfig(**values)


def _existing(path: Path, where: Path, what: str) -> Path:
    path = Path(os.path.normpath(path))
    if not path.is_file():
        raise OptionError(f"{where}: {what} {path} does not exist")
    return path


# -- the server kit's settings ---------------------------------------------------------------------
@dataclass(frozen=True)
class KitClient:
    """One client as the server kit lists it."""

    client: str  #: the user id
    split: str
    images: int
    public_key: Path  #: its node public key (OpenSSH), absolute


@dataclass(frozen=True)
class ServerSettings:
    """A server kit's ``settings.json``, its files as absolute paths (:func:`read_server_settings`)."""

    folder: Path  #: the server kit folder
    store: str  #: the store's file name
    server: str  #: "host:port" clients connect to
    storage: str  #: "jpeg", "raw" or "lossless"
    image_size: int
    label_names: dict[str, list[str]]  #: per label level ("coarse", "fine"), in index order
    clients: dict[str, list[KitClient]]  #: per split, in store order
    ca_certificate: Path
    certificate: Path
    private_key: Path

    def all_clients(self) -> list[KitClient]:
        """Every client of every split."""
        return [client for clients in self.clients.values() for client in clients]


def read_server_settings(path: str | os.PathLike[str]) -> ServerSettings:
    """Read a server kit's ``settings.json``; its certificate and key paths become absolute (and must exist).

    Parameters:
        path: the server kit folder (``DEST/server``), or its ``settings.json``.

    Example::

        settings = read_server_settings("kits/server")
        print(settings.server, len(settings.all_clients()))
    """
    path = Path(path)
    file = path / SETTINGS_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"no server kit at {path}: {file} does not exist") from None
    except OSError as error:
        raise OptionError(f"cannot read {file}: {error.strerror}") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise OptionError(f"{file} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != SERVER_KIT_FORMAT:
        raise OptionError(f"{file} is not a fedimage server kit's settings")
    if data.get("version") != KITS_VERSION:
        raise OptionError(f"{file} has version {data.get('version')!r}; this fedimage reads {KITS_VERSION}")
    folder = file.absolute().parent
    try:
        certificates = data["certificates"]
        clients = {
            split: [
                KitClient(
                    client=str(entry["client"]),
                    split=split,
                    images=int(entry["images"]),
                    public_key=_existing(folder / entry["public_key"], file, "public key"),
                )
                for entry in entries
            ]
            for split, entries in data["clients"].items()
        }
        return ServerSettings(
            folder=folder,
            store=str(data["store"]),
            server=str(data["server"]),
            storage=str(data["storage"]),
            image_size=int(data["image_size"]),
            label_names={level: list(names) for level, names in data["label_names"].items()},
            clients=clients,
            ca_certificate=_existing(folder / certificates["ca"], file, "CA certificate"),
            certificate=_existing(folder / certificates["certificate"], file, "certificate"),
            private_key=_existing(folder / certificates["private_key"], file, "private key"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise OptionError(
            f"{file}: malformed server kit settings ({type(error).__name__}: {error})"
        ) from None


# -- making kits ---------------------------------------------------------------------------------
@dataclass
class KitsReport:
    """What :func:`make_kits` wrote: clients and images per split, where, for which server."""

    store: Path
    destination: Path
    server: str
    splits: dict[str, dict[str, int]] = field(default_factory=dict)  #: {split: {"clients", "images"}}
    seconds: float = 0.0

    @property
    def clients(self) -> int:
        return sum(split["clients"] for split in self.splits.values())

    @property
    def images(self) -> int:
        return sum(split["images"] for split in self.splits.values())

    def summary(self) -> str:
        """Two lines for the command line."""
        splits = ", ".join(
            f"{name} {info['clients']} client{'s' * (info['clients'] != 1)}"
            for name, info in self.splits.items()
        )
        return (
            f"kits of {self.store.name} for server {self.server} in {self.destination}: "
            f"{splits or 'no clients'} ({self.images} images, {self.seconds:.1f} s)\n"
            f"send {SERVER}/ to the server and each {CLIENTS}/SPLIT/NAME/ to its client; "
            f"keep {AUTHORITY}/ (the CA's key) on no site"
        )


def _select_splits(store: FederatedStore, splits: Sequence[str] | str | None) -> list[str]:
    if splits is None:
        return list(store.splits)
    if isinstance(splits, str):
        splits = [part.strip() for part in splits.split(",")]
    chosen = list(dict.fromkeys(splits))
    unknown = [split for split in chosen if split not in store.splits]
    if not chosen or unknown:
        raise OptionError(
            f"`splits` must name splits of {store.path.name} ({', '.join(store.splits)}), "
            f"got {list(splits)!r}"
        )
    return chosen


def _check_destination(destination: Path, overwrite: bool, store: Path) -> None:
    """Refuse a destination that is a file, a non-empty folder (without ``overwrite``), or other data."""
    target = destination.resolve()
    store = store.resolve()
    if target == store or target in store.parents:
        raise OptionError(f"`destination` {destination} is (or holds) the store {store}")
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise OptionError(f"`destination` {destination} exists and is not a folder")
    if not destination.exists() or not any(destination.iterdir()):
        return
    if not overwrite:
        raise OptionError(
            f"`destination` {destination} is not empty; pass `overwrite` to replace earlier kits"
        )
    if not _is_kits_folder(destination):
        raise OptionError(
            f"`destination` {destination} holds no {KITS_FILE} of earlier kits; "
            "refusing to delete it even with `overwrite`"
        )


def _is_kits_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / KITS_FILE).read_text(encoding="utf-8")).get("format") == KITS_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _publish(staging: Path, destination: Path, overwrite: bool) -> None:
    """Move the finished kits into place; earlier kits (``overwrite``) are deleted only after."""
    if destination.is_dir() and not any(destination.iterdir()):
        destination.rmdir()
    if not destination.exists():
        os.rename(staging, destination)
        return
    if not (overwrite and _is_kits_folder(destination)):  # it changed while the kits were written
        raise OptionError(
            f"`destination` {destination} changed while the kits were written; nothing replaced"
        )
    old = destination.with_name(f".{destination.name}.replaced-{secrets.token_hex(4)}")
    os.rename(destination, old)
    try:
        os.rename(staging, destination)
    except BaseException:
        os.rename(old, destination)
        raise
    shutil.rmtree(old, ignore_errors=True)


def make_kits(
    store_path: str | os.PathLike[str] | FederatedStore,
    destination: str | os.PathLike[str],
    server: str,
    *,
    key: StoreKey | None = None,
    splits: Sequence[str] | str | None = None,
    overwrite: bool = False,
    server_names: Iterable[str] = (),
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    quality: int = DEFAULT_QUALITY,
    quiet: bool = False,
) -> KitsReport:
    """Make the kits of a federation over ``store_path``: a CA, a server kit, a kit per client.

    Every user of the chosen splits becomes a client: its kit holds its data as an encrypted
    one-user store with its own fresh key, the CA certificate, a node-authentication key
    pair for Flower and ``node.toml``. The server kit holds a TLS certificate for the host of
    ``server`` (and ``server_names``, and the loopback names ``localhost`` and ``127.0.0.1``),
    every client's node public key and ``settings.json``, and
    no data or data key. The layout is in this module's docstring. Kits are written under a
    temporary name next to ``destination`` and renamed when complete.

    Parameters:
        store_path: the store (a path, or a :class:`~fedimage.store.reader.FederatedStore` already open).
        destination: the folder to create; an existing non-empty one needs ``overwrite`` and must
            hold earlier kits (a ``kits.json``).
        server: ``"host:port"`` clients connect to (an IPv6 address in brackets: ``"[::1]:9092"``).
        key: the key of an encrypted store (when ``store_path`` is a path).
        splits: the splits whose users become clients (a list, or ``"train,val"``); default all.
        overwrite: replace earlier kits at ``destination``.
        server_names: more names (DNS names or IP addresses) for the server's certificate.
        validity_days: how long the certificates are valid.
        quality: JPEG quality for stored images that must be re-encoded.
        quiet: no progress bar.

    Example::

        report = make_kits("flair.h5", "kits/", "fl.example.org:9092", splits=["train"])
        print(report.summary())
    """
    host, _ = parse_server(server)
    server_names = _check_server_names(server_names)
    if not isinstance(validity_days, int) or isinstance(validity_days, bool) or validity_days < 1:
        raise OptionError(
            f"`validity_days` must be a whole number of days, at least 1, got {validity_days!r}"
        )
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise OptionError(f"`quality` must be between 1 and 100, got {quality!r}")
    if not isinstance(store_path, FederatedStore):
        with FederatedStore(store_path, key=key) as opened:
            return make_kits(
                opened,
                destination,
                server,
                splits=splits,
                overwrite=overwrite,
                server_names=server_names,
                validity_days=validity_days,
                quality=quality,
                quiet=quiet,
            )
    from fedimage.federation import pki  # noqa: F401  (the privacy extra: fail before any work)

    store = store_path
    started = time.perf_counter()
    chosen = _select_splits(store, splits)
    destination = Path(destination)
    target = Path(os.path.abspath(destination))  # ".", "..": a folder with a name and a parent
    if target == target.parent:
        raise OptionError(f"`destination` {destination} is the root folder")
    _check_destination(target, overwrite, store.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    report = KitsReport(store=store.path, destination=destination, server=server)
    # the loopback names let the operator's own tools (``serve`` registering node keys) reach the
    # SuperLink on its machine
    names = list(dict.fromkeys([host, *server_names, *LOOPBACK_NAMES]))
    try:
        with tqdm(
            total=sum(store.num_images(split) for split in chosen), unit="img", disable=quiet, desc="kits"
        ) as bar:
            _write_kits(staging, store, server, chosen, names, validity_days, quality, report, bar)
        _publish(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - started
    return report


def _write_kits(
    root: Path,
    store: FederatedStore,
    server: str,
    splits: list[str],
    names: list[str],
    validity_days: int,
    quality: int,
    report: KitsReport,
    bar: tqdm,
) -> None:
    from fedimage.federation import pki

    os.chmod(root, _PRIVATE_FOLDER)
    authority = pki.make_private_folder(root / AUTHORITY)
    server_kit = pki.make_private_folder(root / SERVER)
    ca_key, ca_cert = pki.make_authority(
        f"fedimage federation CA {store.path.name}", validity_days=validity_days
    )
    pki.write_private_key(authority / CA_KEY, ca_key)
    pki.write_certificate(authority / CA_CERTIFICATE, ca_cert)
    pki.write_certificate(server_kit / CA_CERTIFICATE, ca_cert)
    server_key, server_cert = pki.issue_server_certificate(
        ca_key, ca_cert, names, validity_days=validity_days
    )
    pki.write_private_key(server_kit / SERVER_KEY, server_key)
    pki.write_certificate(server_kit / SERVER_CERTIFICATE, server_cert)
    ca_pem = pki.certificate_pem(ca_cert)
    (server_kit / NODES).mkdir()
    (root / CLIENTS).mkdir()
    listed: dict[str, list[dict[str, Any]]] = {}
    for split in splits:
        (server_kit / NODES / split).mkdir()
        (root / CLIENTS / split).mkdir()
        table = NameTable()
        entries = listed[split] = []
        counts = report.splits[split] = {"clients": 0, "images": 0}
        for user_id in store.users(split):
            user = ExportUser.read(store, split, user_id)
            name = table.assign(user_id)
            kit = pki.make_private_folder(root / CLIENTS / split / name)
            count = write_user_bundle(user, kit / BUNDLE, kit / BUNDLE_KEY, quality)
            (kit / CA_CERTIFICATE).write_bytes(ca_pem)
            private, public = pki.make_node_key_pair()
            pki.write_private_file(kit / NODE_KEY, private)
            (kit / NODE_PUBLIC_KEY).write_bytes(public)
            (server_kit / NODES / split / f"{name}.pub").write_bytes(public)
            config = dict(
                zip(
                    NODE_CONFIG_KEYS,
                    (user_id, split, server, BUNDLE, BUNDLE_KEY, CA_CERTIFICATE, NODE_KEY, NODE_PUBLIC_KEY),
                    strict=True,
                )
            )
            (kit / NODE_CONFIG_FILE).write_text(dump_toml_table(NODE_CONFIG_TABLE, config), encoding="utf-8")
            entries.append({"client": user_id, "images": count, "public_key": f"{NODES}/{split}/{name}.pub"})
            counts["clients"] += 1
            counts["images"] += count
            bar.update(count)
    settings = {
        "format": SERVER_KIT_FORMAT,
        "version": KITS_VERSION,
        "store": store.path.name,
        "server": server,
        "storage": store.storage,
        "image_size": store.image_size,
        "label_names": {level: store.label_names_of(level) for level in LABEL_LEVELS},
        "clients": listed,
        "certificates": {"ca": CA_CERTIFICATE, "certificate": SERVER_CERTIFICATE, "private_key": SERVER_KEY},
    }
    _write_json(server_kit / SETTINGS_FILE, settings)
    _write_json(
        root / KITS_FILE,
        {
            "format": KITS_FORMAT,
            "version": KITS_VERSION,
            "store": store.path.name,
            "server": server,
            "created_by": f"fedimage {__version__}",
            "splits": report.splits,
        },
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "DEFAULT_VALIDITY_DAYS",
    "KITS_FORMAT",
    "NODE_CONFIG_KEYS",
    "SERVER_KIT_FORMAT",
    "KitClient",
    "KitsReport",
    "NodeConfig",
    "ServerSettings",
    "make_kits",
    "parse_server",
    "read_node_config",
    "read_server_settings",
]
