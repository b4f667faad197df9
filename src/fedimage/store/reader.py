"""Reading a store: splits, users, and one user's images and multi-hot labels."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import simplejpeg
from PIL import Image

from fedimage.errors import FedimageError, OptionError, StoreError
from fedimage.labels import LabelLevel
from fedimage.store import schema
from fedimage.store.metadata import MetadataColumn, decode_user_values, manifest_columns
from fedimage.store.sealing import SEALED, Sealing, StoreKey, open_sealing

if TYPE_CHECKING:
    from collections.abc import Mapping

    UserGroup = h5py.Group | Mapping[str, np.ndarray]

#: Decrypted users up to this size stay cached (one user), for per-image access (``load_image``).
DECRYPTED_CACHE_BYTES = 64 << 20


class UnknownUserError(FedimageError, KeyError):
    """A user id or split that the store does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class UserData:
    """One user's data: decoded images and multi-hot targets, in store order."""

    split: str
    user_id: str
    images: np.ndarray  # uint8 [N, S, S, C]: C = 3 (rgb) or 1 (gray store); uint16 in a 16-bit store
    labels: np.ndarray  # float32 [N, num coarse labels]
    fine_labels: np.ndarray  # float32 [N, num fine labels]
    image_ids: list[str]
    #: ``{column: values aligned with image_ids}`` for the store's per-image metadata columns
    #: (None for a missing value; see :mod:`fedimage.store.metadata`); empty when it has none.
    metadata: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)


def decode_jpeg(
    data: bytes | memoryview | np.ndarray, out: np.ndarray | None = None, color: str = "rgb"
) -> np.ndarray:
    """Decode one stored JPEG into uint8 [H, W, 3] RGB, or [H, W, 1] for ``color="gray"``
    (into ``out`` when given).

    libjpeg-turbo through simplejpeg (pixel-identical to Pillow's decoder, about
    1.8x faster); Pillow for anything simplejpeg declines.
    """
    gray = color == "gray"
    try:
        return simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", buffer=out)
    except ValueError:
        image = Image.open(io.BytesIO(bytes(data)))
        mode = "L" if gray else "RGB"
        array = np.asarray(image if image.mode == mode else image.convert(mode))
        if gray:
            array = array[:, :, None]
        if out is None:
            return array
        out[...] = array
        return out


def decode_png(
    data: bytes | memoryview | np.ndarray,
    out: np.ndarray | None = None,
    color: str = "rgb",
    bit_depth: int = 8,
) -> np.ndarray:
    """Decode one stored PNG (a lossless store's) into [H, W, 3] or [H, W, 1], uint8 or (16 bits) uint16.

    Pillow's PNG decoder; a 16-bit image comes back with the values it was written with.
    """
    with Image.open(io.BytesIO(bytes(data))) as image:
        if bit_depth == 16:
            array = np.array(image).astype(np.uint16, copy=False)
        else:
            mode = "L" if color == "gray" else "RGB"
            array = np.array(image if image.mode == mode else image.convert(mode))  # writable, as JPEGs
    if array.ndim == 2:
        array = array[:, :, None]
    if out is None:
        return array
    out[...] = array
    return out


@dataclass(frozen=True)
class UserLabels:
    """One user's labels of one level: ``rows[k]`` is the image of label ``cols[k]``."""

    split: str
    user_id: str
    count: int  # images
    rows: np.ndarray  # int64, image index within the user
    cols: np.ndarray  # int64, label index
    image_ids: list[str] | None = None


class FederatedStore:
    """A fedimage store opened for reading. Use :func:`fedimage.open`.

    Users and their image counts come from the manifest, so listing users
    touches no user group; :meth:`load_user` reads one group. An encrypted store
    (:mod:`fedimage.privacy.encryption`) needs its ``key``: 32 bytes, a key file, or a
    :class:`~fedimage.privacy.keys.Passphrase`; its groups are decrypted on read.
    """

    def __init__(self, path: str | Path, key: StoreKey | None = None):
        self.path = Path(path)
        #: The key the store was opened with (None: a plain store), so other processes can reopen it.
        self.key = key
        #: The partition overlay whose clients are the users (None: the store's own users).
        self.partition: Path | None = None
        self._cipher: Sealing | None = None
        self._sealed_metadata: dict[str, str] | None = None
        self._decrypted: tuple[tuple[str, str], Mapping[str, np.ndarray]] | None = None
        if not self.path.is_file():
            raise StoreError(f"store not found: {self.path}")
        try:
            #: The open ``h5py.File``, for direct access to the schema.
            self.h5 = h5py.File(self.path, "r")
        except OSError as error:
            raise StoreError(f"{self.path} is not a readable HDF5 file: {error}") from None
        try:
            self.manifest: dict[str, Any] = self.read_metadata(schema.MANIFEST)
        except KeyError:
            self.h5.close()
            raise StoreError(f"{self.path} is not a fedimage store (no /metadata/manifest)") from None
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            self.h5.close()
            raise StoreError(f"{self.path}: unreadable /metadata/manifest ({error})") from None
        if self.manifest.get("format") != schema.FORMAT_NAME:
            self.h5.close()
            raise StoreError(f"{self.path} is not a fedimage store")
        version = self.manifest.get("format_version")
        if version not in schema.READABLE_FORMAT_VERSIONS:
            self.h5.close()
            readable = ", ".join(str(known) for known in schema.READABLE_FORMAT_VERSIONS)
            raise StoreError(
                f"{self.path} has store format version {version}; this fedimage reads versions {readable}"
            )
        #: The store's format version (1: a jpeg store's bytes are named as FLAIR's pixels).
        self.format_version: int = version
        #: The public encryption header of an encrypted store (scheme, store id, KDF), else None.
        self.encryption: dict[str, Any] | None = self.manifest.get("encryption")
        if self.encryption is not None or key is not None:
            try:
                self._unlock(key)
            except BaseException:
                self.h5.close()
                raise
        self.storage: str = self.manifest["storage"]
        self.image_size: int = self.manifest["image_size"]
        #: ``rgb`` (images [S, S, 3]) or ``gray`` (images [S, S, 1]); stores before gray mode are rgb.
        self.color: str = self.manifest.get("color", "rgb")
        #: Channels of each decoded image: 3 or 1.
        self.channels: int = 1 if self.color == "gray" else 3
        #: Bits per sample of a decoded image: 8 (uint8), or 16 (uint16: a lossless 16-bit store).
        self.bit_depth: int = int(self.manifest.get("bit_depth", 8))
        #: The dtype of decoded images.
        self.dtype: np.dtype = np.dtype(np.uint16 if self.bit_depth == 16 else np.uint8)
        #: The datasets of a user's images: (``images``, None) for raw pixels, (``jpeg``,
        #: ``jpeg_offsets``) for JPEG bytes (format version 1: ``images``, ``image_offsets``).
        self.image_datasets: tuple[str, str | None] = schema.image_datasets(self.storage, version)
        self.label_mapping: dict[str, int] = self.read_metadata(schema.LABEL_MAPPING)
        self.fine_label_mapping: dict[str, int] = self.read_metadata(schema.FINE_LABEL_MAPPING)
        self.taxonomy: dict[str, str] = self.read_metadata(schema.TAXONOMY)
        self._users: dict[str, dict[str, dict[str, Any]]] = self.manifest["users"]
        #: The per-image metadata columns every user group holds (name, type, origin), in order.
        self.metadata_columns: list[MetadataColumn] = manifest_columns(self.manifest)

    def _unlock(self, key: StoreKey | None) -> None:
        """Check the key of an encrypted store and decrypt its metadata (the manifest included)."""
        if self.encryption is None:
            raise OptionError(f"{self.path} is not encrypted; open it without a key")
        if key is None:
            raise StoreError(
                f"{self.path} is encrypted ({self.encryption.get('key')}); open it with `key=KEYFILE` "
                "or `key=Passphrase(...)`"
            )
        self._cipher = open_sealing(key, self.encryption, str(self.path))
        try:
            sealed = self.h5[f"{schema.METADATA}/{SEALED}"][()].tobytes()
        except (KeyError, OSError, RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise StoreError(f"{self.path}: cannot read the sealed metadata ({error})") from None
        self._sealed_metadata = self._cipher.open_metadata(sealed, str(self.path))
        try:
            self.manifest = self.read_metadata(schema.MANIFEST)
        except (KeyError, ValueError):
            raise StoreError(f"{self.path}: the sealed metadata holds no manifest") from None

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    def read_metadata(self, name: str) -> Any:
        """A JSON entry of ``/metadata`` (e.g. ``"label_counter"``), parsed."""
        if self._sealed_metadata is not None:
            return json.loads(self._sealed_metadata[name])
        return json.loads(self.h5[f"{schema.METADATA}/{name}"][()])

    def metadata_entries(self) -> dict[str, str]:
        """Every JSON entry of ``/metadata`` as text (an encrypted store's: decrypted)."""
        if self._sealed_metadata is not None:
            return dict(self._sealed_metadata)
        return {name: dataset.asstr()[()] for name, dataset in self.h5[schema.METADATA].items()}

    # -- Python object protocol ------------------------------------------------------------
    def __enter__(self) -> FederatedStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._decrypted = None
        self.h5.close()

    def __repr__(self) -> str:
        state = "open" if self.h5.id.valid else "closed"
        counts = ", ".join(f"{split}: {len(users)} users" for split, users in self._users.items())
        storage = self.storage if self.color == "rgb" else f"{self.storage}, {self.color}"
        storage = f"{storage}, encrypted" if self.encrypted else storage
        return f'<fedimage store "{self.path}" ({storage}, {counts}) ({state})>'

    # -- structure ----------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return list(self._users)

    @property
    def label_names(self) -> list[str]:
        """Coarse label names in index order."""
        return sorted(self.label_mapping, key=self.label_mapping.__getitem__)

    @property
    def fine_label_names(self) -> list[str]:
        return sorted(self.fine_label_mapping, key=self.fine_label_mapping.__getitem__)

    def users(self, split: str) -> dict[str, int]:
        """User ids of a split mapped to their number of images, in store order."""
        return {user: info["images"] for user, info in self._split_users(split).items()}

    def num_images(self, split: str | None = None) -> int:
        splits = [split] if split is not None else self.splits
        return sum(sum(self.users(name).values()) for name in splits)

    def _split_users(self, split: str) -> dict[str, dict[str, Any]]:
        try:
            return self._users[split]
        except KeyError:
            raise UnknownUserError(
                f"split {split!r} is not in {self.path.name}; its splits are: {', '.join(self.splits)}"
            ) from None

    def group(self, split: str, user_id: str) -> UserGroup:
        """The HDF5 group of one user; for an encrypted store, its decrypted datasets (arrays by name)."""
        users = self._split_users(split)
        if user_id not in users:
            examples = ", ".join(list(users)[:3])
            raise UnknownUserError(
                f"user {user_id!r} is not in split {split!r} of {self.path.name} "
                f"({len(users)} users, e.g. {examples})"
            )
        return self._stored_group(split, user_id, users[user_id])

    def _stored_group(self, split: str, user_id: str, entry: dict[str, Any]) -> UserGroup:
        """The group a user of the file has (``entry``: its manifest entry), decrypted if sealed."""
        if self._cipher is not None:
            return self._decrypted_group(self._cipher, split, user_id, entry)
        return self.h5[f"{split}/{schema.user_key(user_id)}"]

    def _decrypted_group(
        self, cipher: Sealing, split: str, user_id: str, entry: dict[str, Any]
    ) -> Mapping[str, np.ndarray]:
        if self._decrypted is not None and self._decrypted[0] == (split, user_id):
            return self._decrypted[1]
        try:
            blob = self.h5[f"{split}/{schema.user_key(user_id)}/{SEALED}"][()].tobytes()
        except (KeyError, OSError, RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise StoreError(
                f"{self.path}: user {user_id!r} of split {split!r}: cannot read its sealed data ({error})"
            ) from None
        try:
            arrays = cipher.open_user(split, user_id, blob, str(entry.get("nonce")))
        except StoreError as error:
            raise StoreError(f"{self.path}: {error}") from None
        self._decrypted = ((split, user_id), arrays) if len(blob) <= DECRYPTED_CACHE_BYTES else None
        return arrays

    # -- data -----------------------------------------------------------------------------------
    def load_user(self, split: str, user_id: str) -> UserData:
        """Decode all images of one user with their multi-hot coarse and fine labels."""
        group = self.group(split, user_id)
        image_ids = [raw.decode("utf-8") for raw in group[schema.IMAGE_IDS][()]]
        count = len(image_ids)
        return UserData(
            split=split,
            user_id=user_id,
            images=self._read_images(group, count),
            labels=self._targets(group, count, LabelLevel.COARSE),
            fine_labels=self._targets(group, count, LabelLevel.FINE),
            image_ids=image_ids,
            metadata=self._metadata_of(group, count),
        )

    def load_metadata(self, split: str, user_id: str) -> dict[str, list[Any]]:
        """One user's per-image metadata, ``{column: values aligned with its image ids}``, without
        reading any image (empty for a store without metadata columns).

            sites = store.load_metadata("train", "alice")["site"]
        """
        group = self.group(split, user_id)
        return self._metadata_of(group, group[schema.IMAGE_IDS].shape[0])

    def _metadata_of(self, group: UserGroup, count: int) -> dict[str, list[Any]]:
        return {column.name: decode_user_values(column, group, count) for column in self.metadata_columns}

    def load_targets(
        self, split: str, user_id: str, labels: LabelLevel | str = LabelLevel.COARSE
    ) -> np.ndarray:
        """One user's multi-hot targets, float32 [N, L], without reading any image."""
        group = self.group(split, user_id)
        return self._targets(group, group[schema.IMAGE_IDS].shape[0], LabelLevel.parse(labels))

    def _targets(self, group: UserGroup, count: int, level: LabelLevel) -> np.ndarray:
        row, col = schema.label_datasets(level)
        return _multi_hot(group, row, col, count, len(self.label_names_of(level)))

    def label_names_of(self, level: LabelLevel | str) -> list[str]:
        """The label names of ``level`` (coarse or fine) in index order."""
        return self.label_names if LabelLevel.parse(level) is LabelLevel.COARSE else self.fine_label_names

    def iter_user_labels(
        self,
        level: LabelLevel | str = LabelLevel.COARSE,
        splits: Iterable[str] | None = None,
        *,
        image_ids: bool = False,
    ) -> Iterator[UserLabels]:
        """Each user's labels of ``level`` as (image row, label index) pairs, read without any pixel.

        Users come split by split (``splits``, default all) in store order. With ``image_ids``
        each user's image ids are read too.

            for user in store.iter_user_labels("fine", ["train"]):
                counts = np.bincount(user.cols, minlength=len(store.fine_label_names))
        """
        row, col = schema.label_datasets(level)
        for split in self.splits if splits is None else splits:
            for user_id, count in self.users(split).items():
                group = self._label_group(split, user_id)
                ids = (
                    [raw.decode("utf-8") for raw in read_dataset(group, schema.IMAGE_IDS)]
                    if image_ids
                    else None
                )
                rows = read_dataset(group, row).astype(np.int64)
                cols = read_dataset(group, col).astype(np.int64)
                yield UserLabels(split, user_id, count, rows, cols, ids)

    def _label_group(self, split: str, user_id: str) -> Any:
        """What :meth:`iter_user_labels` reads a user's labels from: a plain store's group through h5py's
        low-level API (a FLAIR-sized store has 51k of them), else :meth:`group`."""
        users = self._split_users(split)
        if user_id not in users:
            return self.group(split, user_id)  # the same one-line error
        if self._cipher is not None:
            return self._stored_group(split, user_id, users[user_id])
        return h5py.h5g.open(self.h5.id, f"{split}/{schema.user_key(user_id)}".encode())

    def iter_users(self, split: str) -> Iterator[UserData]:
        """Every user of a split, loaded one at a time in store order."""
        for user_id in self._split_users(split):
            yield self.load_user(split, user_id)

    def load_image(self, split: str, user_id: str, index: int) -> np.ndarray:
        """One decoded image of a user (reads only that image's bytes)."""
        group = self.group(split, user_id)
        count = group[schema.IMAGE_IDS].shape[0]
        if not -count <= index < count:
            raise IndexError(f"image {index} out of range: user {user_id!r} has {count} images")
        index %= count
        images_name, offsets_name = self.image_datasets
        images = group[images_name]
        if offsets_name is None:
            return np.array(images[index])  # a copy: decrypted arrays are read-only views
        offsets = group[offsets_name]
        start, end = offsets[index], offsets[index + 1]
        return self.decode(images[start:end])

    def decode(self, data: bytes | memoryview | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one stored image file (a JPEG, or a lossless store's PNG) to [S, S, C] pixels."""
        if self.storage == "lossless":
            return decode_png(data, out, self.color, self.bit_depth)
        return decode_jpeg(data, out, self.color)

    def encoded_images(self, split: str, user_id: str) -> list[bytes]:
        """The stored image files (JPEG, or a lossless store's PNG) of one user, undecoded."""
        if self.storage == "raw":
            raise StoreError(f"{self.path.name} stores raw pixels, not encoded images")
        group = self.group(split, user_id)
        images_name, offsets_name = self.image_datasets
        blob = group[images_name][()]
        offsets = group[offsets_name][()]
        return [blob[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]

    def _read_images(self, group: h5py.Group, count: int) -> np.ndarray:
        images_name, offsets_name = self.image_datasets
        if offsets_name is None:
            images = group[images_name][()]
            return images if images.flags.writeable else images.copy()
        size = self.image_size
        out = np.empty((count, size, size, self.channels), dtype=self.dtype)
        blob = group[images_name][()]
        offsets = group[offsets_name][()]
        view = memoryview(blob)
        for index in range(count):
            self.decode(view[offsets[index] : offsets[index + 1]], out[index])
        return out


def read_dataset(group: h5py.Group | h5py.h5g.GroupID | Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A whole dataset of a group through h5py's low-level API (a third of ``group[name][()]``'s time)."""
    if isinstance(group, h5py.h5g.GroupID):  # a group opened with the low-level API
        dataset = h5py.h5d.open(group, name.encode("utf-8"))
    elif not isinstance(group, h5py.Group):  # an encrypted store's decrypted user: arrays in memory
        return np.asarray(group[name])
    else:
        dataset = h5py.h5d.open(group.id, name.encode("utf-8"))
    array = np.empty(dataset.shape, dtype=dataset.dtype)
    if array.size:
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
    return array


def _multi_hot(group: h5py.Group, row_name: str, col_name: str, count: int, width: int) -> np.ndarray:
    targets = np.zeros((count, width), dtype=np.float32)
    targets[group[row_name][()], group[col_name][()]] = 1.0
    return targets
