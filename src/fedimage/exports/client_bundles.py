"""``client-bundles``: one encrypted one-user store per client, each under its own fresh key.

::

    DEST/
      bundles/{split}/{user}.h5   an encrypted fedimage store holding only that client's data
      keys/{split}/{user}.key     its 256-bit key (mode 0600, folder 0700), from the OS CSPRNG
      index.json                  clients: split, user id, bundle and key paths, image count

A bundle opens like any store: ``fedimage.open("bundles/train/u1.h5", key="keys/train/u1.key")``.
Keys must reach each site by another channel than its bundle; the ``keys`` folder is separate
so the two can be shipped apart. A bundle keeps the store's label vocabularies and taxonomy
(so every client's targets have the same width) and its per-image metadata columns (the client's
values, sealed with its group; the columns listed in its manifest's ``image_metadata``) but none of
the other clients' data or ids. A bundle has its store's storage, colour and bit depth: a jpeg
store's JPEGs, a raw store's pixels and a lossless store's PNG files (8 or 16 bits) are carried as
stored. Needs the ``privacy`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fedimage._version import __version__
from fedimage.exports.base import ExportRun
from fedimage.exports.names import NameTable
from fedimage.exports.reading import ExportUser
from fedimage.privacy import new_store_cipher
from fedimage.privacy.keys import SCHEME
from fedimage.privacy.pseudonyms import generate_key_file, load_key
from fedimage.store import schema
from fedimage.store.writer import StoreWriter

BUNDLES = "bundles"
KEYS = "keys"
INDEX = "index.json"
_PRIVATE_FOLDER = 0o700


def write_client_bundles(run: ExportRun, destination: Path) -> None:
    """Write every user of ``run.store`` as its own encrypted bundle with its own key file."""
    store = run.store
    (destination / BUNDLES).mkdir()
    (destination / KEYS).mkdir(mode=_PRIVATE_FOLDER)
    clients: list[dict[str, Any]] = []
    for split in store.splits:
        bundle_folder = destination / BUNDLES / split
        key_folder = destination / KEYS / split
        bundle_folder.mkdir()
        key_folder.mkdir(mode=_PRIVATE_FOLDER)
        names = NameTable()
        for user in run.users(split):
            name = names.assign(user.user_id)
            write_user_bundle(
                user, bundle_folder / f"{name}.h5", key_folder / f"{name}.key", run.options.quality
            )
            clients.append(
                {
                    "split": split,
                    "user": user.user_id,
                    "bundle": f"{BUNDLES}/{split}/{name}.h5",
                    "key": f"{KEYS}/{split}/{name}.key",
                    "images": len(user),
                }
            )
    index = {
        "format": "fedimage-client-bundles",
        "store": store.path.name,
        "scheme": SCHEME,
        "note": "send each key file to its client by another channel than its bundle",
        "clients": clients,
    }
    (destination / INDEX).write_text(json.dumps(index, indent=1, ensure_ascii=False))


def _payloads(user: ExportUser, quality: int) -> Iterator[bytes]:
    """The images as the bundle stores them: a jpeg store's bytes as stored (a grayscale JPEG of an
    older RGB store re-encoded), a lossless store's PNG files as stored, raw pixels as raw bytes."""
    if user.store.storage == "jpeg":
        yield from user.jpegs(quality)
    elif user.store.storage == "lossless":
        yield from user.stored_files()
    else:
        for pixels in user.pixels():
            yield pixels.tobytes()


def write_user_bundle(user: ExportUser, bundle_path: Path, key_path: Path, quality: int) -> int:
    """Write one user's data as an encrypted one-user store under a fresh key; returns its image count.

    The key (256 bits from the OS CSPRNG) is written to ``key_path`` first, created with mode
    0600 (never over an existing file); the bundle then opens with
    ``fedimage.open(bundle_path, key=key_path)``. The bundle keeps the store's label
    vocabularies, taxonomy and metadata columns (this user's values) but none of the other users'
    data or ids.

    Parameters:
        user: the user to write, as read by :meth:`~fedimage.exports.reading.ExportUser.read`.
        bundle_path: the bundle file to create (its folder must exist).
        key_path: the key file to create (its folder should be private, mode 0700).
        quality: the JPEG quality for images that must be re-encoded (a grayscale JPEG of an older
            store; a raw store's pixels are kept raw).

    Example::

        user = ExportUser.read(store, "train", "alice")
        write_user_bundle(user, Path("alice.h5"), Path("alice.key"), quality=95)
    """
    store = user.store
    generate_key_file(key_path)
    fingerprint = json.dumps(
        {
            "bundle of": store.path.name,
            "store": store.encryption,
            "split": user.split,
            "user": user.user_id,
        }
    ).encode("utf-8")
    cipher = new_store_cipher(load_key(key_path), fingerprint)
    return _write_bundle(user, bundle_path, cipher, quality)


def _write_bundle(user: ExportUser, path: Path, cipher: Any, quality: int) -> int:
    store = user.store
    coarse, fine = store.label_names, store.fine_label_names
    with StoreWriter(
        path,
        storage=store.storage,
        image_size=store.image_size,
        coarse_labels=coarse,
        fine_labels=fine,
        cipher=cipher,
        color=store.color,
        metadata_columns=store.metadata_columns,
    ) as writer:
        group = writer.user(user.split, user.user_id)
        rows = zip(
            user.image_ids,
            user.labels,
            user.fine_labels,
            user.metadata_rows(),
            _payloads(user, quality),
            strict=True,
        )
        for image_id, labels, fine_labels, values, payload in rows:
            group.add(
                payload,
                image_id,
                tuple(coarse[i] for i in labels),
                tuple(fine[i] for i in fine_labels),
                values,
            )
        count = group.close()
        manifest = {
            "format": schema.FORMAT_NAME,
            "format_version": schema.FORMAT_VERSION,
            "fedimage_version": __version__,
            "storage": store.storage,
            "image_size": store.image_size,
            "color": store.color,
            "bit_depth": store.bit_depth,
            "source": {"format": "fedimage client bundle", "name": store.path.name},
            "bundle": {"split": user.split, "user": user.user_id},
            "counts": {"inputs": count, "written": count, "rejected": 0, "ignored": {}},
            "splits": {user.split: {"users": 1, "images": count}},
            "users": writer.users,
            "image_metadata": [column.to_json() for column in store.metadata_columns],
        }
        writer.finish({schema.TAXONOMY: store.taxonomy, schema.MANIFEST: manifest})
    return count
