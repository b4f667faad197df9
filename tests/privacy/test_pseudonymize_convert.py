"""`fedimage convert --pseudonymize-key`: no original id reaches the store or the rejects report."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from pathlib import Path

import h5py
import pyarrow as pa
import pytest
from helpers import fast_options, photo, save_image
from hypothesis import given, settings
from hypothesis import strategies as st

import fedimage
from fedimage import ImageOptions, PlanOptions, SplitRatios, convert, open_source
from fedimage.cli import main
from fedimage.conversion import workdir as shards
from fedimage.errors import OptionError, StoreError
from fedimage.privacy import Pseudonymizer, generate_key_file, pseudonymize
from fedimage.privacy.pseudonyms import _truncated_hmacs, key_fingerprint, pseudonymize_array
from fedimage.store.schema import rejects_path_for

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PSEUDONYM = re.compile(r"^[a-z2-7]{32}$")
# Distinctive names, so that finding one in the output bytes cannot be a coincidence.
USERS = ("alice_wonder", "bob.marley", "carol-danvers", "dave@N00")
IMAGE_NAMES = ("holiday_rome", "birthday_party", "garden_tulips")


@pytest.fixture
def people(tmp_path: Path) -> Path:
    """root/<user>/<image>: 4 users with 1..3 JPEGs each, plus a corrupt file and a non-image one."""
    root = tmp_path / "people"
    for number, user in enumerate(USERS):
        for index, name in enumerate(IMAGE_NAMES[: number % 3 + 1]):
            save_image(root / user / f"{name}.jpg", photo(70 + 9 * index, 60, seed=10 * number + index))
    (root / USERS[0] / "broken_selfie.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / USERS[1] / "notes_private.txt").write_text("not an image")
    return root


def key_file(tmp_path: Path, key: bytes, name: str = "pseudonym.key") -> Path:
    path = tmp_path / name
    path.write_bytes(key.hex().encode("ascii"))
    path.chmod(0o600)
    return path


def originals(root: Path) -> list[str]:
    """Every id and name of the source that a pseudonymized store must not contain."""
    relative = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    names = [Path(p).stem for p in relative]
    return [*USERS, *relative, *names, str(root)]


def convert_cli(source: Path, output: Path, key: Path, *extra: str) -> int:
    args = ["convert", str(source), "-o", str(output), "--layout", "user", "--size", "48"]
    return main([*args, "--workers", "1", "--quiet", "--pseudonymize-key", str(key), *extra])


class TestNothingLeaks:
    def test_no_original_id_in_store_or_rejects_report(self, people: Path, tmp_path: Path, capsys):
        output = tmp_path / "out.h5"
        key = key_file(tmp_path, KEY_A)
        assert convert_cli(people, output, key, "--pseudonymize-image-ids") == 0
        report = Path(rejects_path_for(str(output)))
        written = output.read_bytes() + report.read_bytes()
        for original in originals(people):
            assert original.encode("utf-8") not in written, original
        rejects = [json.loads(line) for line in report.read_text().splitlines()]
        assert len(rejects) == 2 and all("path" not in row for row in rejects)
        assert {row["user_id"] for row in rejects} == {pseudonymize(u, KEY_A, "user") for u in USERS[:2]}
        assert all(PSEUDONYM.match(row["image_id"]) and row["origin"] == row["image_id"] for row in rejects)
        pseudonyms = Pseudonymizer(KEY_A)
        with fedimage.open(output) as store:
            users = {user for split in store.splits for user in store.users(split)}
            assert users == {pseudonyms.user(user) for user in USERS}
            image_ids = {
                i for s in store.splits for u in store.users(s) for i in store.load_user(s, u).image_ids
            }
        expected = {
            pseudonyms.image(f"{u}/{n}.jpg") for k, u in enumerate(USERS) for n in IMAGE_NAMES[: k % 3 + 1]
        }
        assert image_ids == expected
        assert "warning" not in capsys.readouterr().err
        with h5py.File(output, "r") as file:
            manifest = json.loads(file["metadata/manifest"][()])
        assert manifest["pseudonyms"] == {
            "scheme": "hmac-sha256-v1",
            "user_ids": True,
            "image_ids": True,
            "key_fingerprint": key_fingerprint(KEY_A),
        }
        assert KEY_A.hex().encode("ascii") not in written

    def test_user_ids_only_warns_that_image_ids_are_paths(self, people: Path, tmp_path: Path, capsys):
        output = tmp_path / "out.h5"
        assert convert_cli(people, output, key_file(tmp_path, KEY_A)) == 0
        assert "add --pseudonymize-image-ids" in capsys.readouterr().err
        with fedimage.open(output) as store:
            split = store.splits[0]
            user = next(iter(store.users(split)))
            assert PSEUDONYM.match(user)
            assert all("/" in image_id for image_id in store.load_user(split, user).image_ids)

    def test_flair_user_ids_through_the_python_api(self, flair_folder: Path, tmp_path: Path):
        output = tmp_path / "flair.h5"
        options = fast_options(image=ImageOptions(size=32), pseudonyms=Pseudonymizer(KEY_A))
        convert(open_source(flair_folder), output, options)
        data = output.read_bytes()
        assert b"@N00" not in data and b"59769174" not in data
        with fedimage.open(output) as store:
            assert set(store.users("train")) == {
                pseudonymize(f"{59769174 + u}@N00", KEY_A, "user") for u in (0, 1, 2, 5)
            }
            assert store.load_user("val", pseudonymize("59769177@N00", KEY_A, "user")).image_ids == [
                "1008",
                "1009",
            ]


class TestKeys:
    def test_same_key_same_bytes_other_key_unlinkable(self, people: Path, tmp_path: Path):
        outputs = []
        for name, key in (("a1", KEY_A), ("a2", KEY_A), ("b", KEY_B)):
            output = tmp_path / name / "out.h5"
            output.parent.mkdir()
            assert (
                convert_cli(
                    people, output, key_file(tmp_path, key, f"{name}.key"), "--pseudonymize-image-ids"
                )
                == 0
            )
            outputs.append(output)
        assert outputs[0].read_bytes() == outputs[1].read_bytes()
        with fedimage.open(outputs[0]) as a, fedimage.open(outputs[2]) as b:
            ids_a = {u for s in a.splits for u in a.users(s)}
            ids_b = {u for s in b.splits for u in b.users(s)}
        assert len(ids_a) == len(ids_b) == len(USERS) and not ids_a & ids_b

    def test_key_file_readable_by_others_is_refused(self, people: Path, tmp_path: Path, capsys):
        key = key_file(tmp_path, KEY_A)
        key.chmod(0o644)
        assert convert_cli(people, tmp_path / "out.h5", key) == 2
        error = capsys.readouterr().err
        assert "accessible by group or others (mode 0644)" in error and "chmod 600" in error
        assert not (tmp_path / "out.h5").exists()

    def test_missing_or_malformed_key_file(self, people: Path, tmp_path: Path, capsys):
        assert convert_cli(people, tmp_path / "out.h5", tmp_path / "nope.key") == 2
        assert "does not exist (make one with `fedimage keygen" in capsys.readouterr().err
        short = tmp_path / "short.key"
        short.write_bytes(b"abcd")
        short.chmod(0o600)
        assert convert_cli(people, tmp_path / "out.h5", short) == 2
        assert "expected 32 raw bytes or 64 hex digits" in capsys.readouterr().err

    def test_keygen_file_works_for_convert(self, people: Path, tmp_path: Path):
        key = generate_key_file(tmp_path / "fresh.key")
        assert os.stat(key).st_mode & 0o777 == 0o600
        assert convert_cli(people, tmp_path / "out.h5", key) == 0

    def test_option_errors(self, tmp_path: Path, people: Path, capsys):
        with pytest.raises(OptionError, match="needs `pseudonyms`"):
            fast_options(pseudonymize_image_ids=True)
        with pytest.raises(OptionError, match="not available with `executor` ray"):
            fast_options(pseudonyms=Pseudonymizer(KEY_A), executor="ray")
        args = ["convert", str(people), "-o", str(tmp_path / "o.h5"), "--pseudonymize-image-ids"]
        assert main(args) == 2
        assert "needs --pseudonymize-key" in capsys.readouterr().err
        assert "key hidden" in repr(Pseudonymizer(KEY_A)) and KEY_A.hex() not in repr(Pseudonymizer(KEY_A))


class TestResume:
    @pytest.fixture(autouse=True)
    def small_shards(self, monkeypatch):
        monkeypatch.setattr(shards, "SHARD_IMAGES", 2)

    def interrupted(self, people: Path, output: Path, key: bytes, monkeypatch) -> None:
        """Convert until the second user group is closed, then fail as a Ctrl-C would."""
        from fedimage.store import writer

        original = writer.UserGroupWriter.close
        calls = [0]

        def close(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(writer.UserGroupWriter, "close", close)
        with pytest.raises(KeyboardInterrupt):
            convert(open_source(people, layout="user"), output, self.options(key))
        monkeypatch.setattr(writer.UserGroupWriter, "close", original)

    @staticmethod
    def options(key: bytes, resume: bool = False):
        plan = PlanOptions(split=SplitRatios(), seed=3)
        return fast_options(
            image=ImageOptions(size=40),
            plan=plan,
            pseudonyms=Pseudonymizer(key),
            resume=resume,
            overwrite=False,
        )

    def test_same_key_resumes_to_identical_bytes(self, people: Path, tmp_path: Path, monkeypatch):
        reference = tmp_path / "reference.h5"
        convert(open_source(people, layout="user"), reference, self.options(KEY_A))
        output = tmp_path / "out.h5"
        self.interrupted(people, output, KEY_A, monkeypatch)
        run = (shards.work_dir_for(output) / shards.RUN_FILE).read_text()
        assert key_fingerprint(KEY_A) in run and KEY_A.hex() not in run
        report = convert(open_source(people, layout="user"), output, self.options(KEY_A, resume=True))
        assert report.shards_reused >= 1
        assert output.read_bytes() == reference.read_bytes()

    def test_other_key_is_refused(self, people: Path, tmp_path: Path, monkeypatch):
        output = tmp_path / "out.h5"
        self.interrupted(people, output, KEY_A, monkeypatch)
        with pytest.raises(StoreError, match="used other pseudonyms"):
            convert(open_source(people, layout="user"), output, self.options(KEY_B, resume=True))


class TestColumn:
    @given(ids=st.lists(st.text(max_size=30), max_size=40))
    @settings(max_examples=60, deadline=None)
    def test_column_matches_one_by_one(self, ids):
        column = pseudonymize_array(pa.array(ids, pa.string()), KEY_A, "image").to_pylist()
        assert column == [pseudonymize(i, KEY_A, "image") if i else "" for i in ids]

    def test_nulls_and_chunks(self):
        chunked = pa.chunked_array([["a", None], ["", "a"]], pa.string())
        assert pseudonymize_array(chunked, KEY_A, "user").to_pylist() == [
            pseudonymize("a", KEY_A, "user"), None, "", pseudonymize("a", KEY_A, "user")
        ]  # fmt: skip
        with pytest.raises(OptionError, match="must be strings"):
            pseudonymize_array(pa.array([1, 2]), KEY_A, "user")

    @given(
        key=st.binary(min_size=1, max_size=100), prefix=st.binary(max_size=30), message=st.text(max_size=30)
    )
    @settings(max_examples=60, deadline=None)
    def test_precomputed_hmac_is_hmac(self, key, prefix, message):
        expected = hmac.digest(key, prefix + message.encode("utf-8", "surrogatepass"), hashlib.sha256)
        assert _truncated_hmacs(key, prefix, [message], 32) == expected
