"""Keyed pseudonyms of user and image ids, key files, and `fedimage keygen`."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import h5py
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedimage.cli import main
from fedimage.errors import OptionError
from fedimage.privacy import Pseudonymizer, generate_key_file, load_key, pseudonymize, pseudonymize_all

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PSEUDONYM = re.compile(r"^[a-z2-7]{32}$")
identifiers = st.text(min_size=0, max_size=40)


class TestPseudonyms:
    @given(identifier=identifiers)
    @settings(max_examples=200)
    def test_same_key_same_pseudonym_safe_characters(self, identifier):
        first = pseudonymize(identifier, KEY_A, "user")
        assert first == pseudonymize(identifier, KEY_A, "user")
        assert PSEUDONYM.match(first)

    @given(identifier=identifiers)
    @settings(max_examples=200)
    def test_kinds_and_keys_separate_pseudonyms(self, identifier):
        user = pseudonymize(identifier, KEY_A, "user")
        assert user != pseudonymize(identifier, KEY_A, "image")
        assert user != pseudonymize(identifier, KEY_B, "user")

    @given(ids=st.lists(identifiers, unique=True, max_size=60))
    @settings(max_examples=100)
    def test_mapping_is_injective_and_matches_single_calls(self, ids):
        mapping = pseudonymize_all(ids, KEY_A, "image")
        assert list(mapping) == ids
        assert len(set(mapping.values())) == len(ids)
        assert all(mapping[i] == Pseudonymizer(KEY_A).image(i) for i in ids)

    def test_known_value_pins_the_construction(self):
        """HMAC-SHA256(key, "fedimage-pseudonym-v1\\0user\\0" + id), first 160 bits, base32 lower-case."""
        import base64
        import hashlib
        import hmac

        digest = hmac.new(KEY_A, b"fedimage-pseudonym-v1\0user\x0059769174@N00", hashlib.sha256).digest()
        expected = base64.b32encode(digest[:20]).decode().lower()
        assert pseudonymize("59769174@N00", KEY_A, "user") == expected

    def test_pseudonyms_are_valid_hdf5_names_and_file_names(self, tmp_path: Path):
        names = pseudonymize_all(["a/b", "..", "%2F", "ü ser", ""], KEY_A, "user").values()
        with h5py.File(tmp_path / "names.h5", "w") as handle:
            for name in names:
                handle.create_group(f"train/{name}")
                (tmp_path / name).touch()
            assert sorted(handle["train"]) == sorted(names)

    # bad calls: (identifier, key, kind, message fragment)
    @pytest.mark.parametrize(
        ("identifier", "key", "kind", "fragment"),
        [
            ("u", b"short", "user", "32 bytes, got 5"),
            ("u", KEY_A, "label", "unknown pseudonym kind"),
            (7, KEY_A, "user", "strings"),
        ],
    )
    def test_bad_calls_are_refused(self, identifier, key, kind, fragment):
        with pytest.raises(OptionError, match=fragment):
            pseudonymize(identifier, key, kind)

    def test_repr_hides_the_key(self):
        assert KEY_A.hex() not in repr(Pseudonymizer(KEY_A)) and "hidden" in repr(Pseudonymizer(KEY_A))


class TestKeyFiles:
    @pytest.mark.parametrize("raw", [False, True])
    def test_round_trip_with_owner_only_permissions(self, tmp_path: Path, raw: bool):
        path = generate_key_file(tmp_path / "key", raw=raw)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = load_key(path)
        assert len(key) == 32
        assert path.read_bytes() == (key if raw else key.hex().encode() + b"\n")
        assert Pseudonymizer.from_file(path).user("alice") == pseudonymize("alice", key, "user")

    def test_two_key_files_differ(self, tmp_path: Path):
        assert load_key(generate_key_file(tmp_path / "a")) != load_key(generate_key_file(tmp_path / "b"))

    def test_an_existing_file_is_never_overwritten(self, tmp_path: Path):
        path = tmp_path / "key"
        path.write_text("precious")
        with pytest.raises(OptionError, match="already exists"):
            generate_key_file(path)
        assert path.read_text() == "precious"

    # bad key files: (content, mode, message fragment)
    @pytest.mark.parametrize(
        ("content", "mode", "fragment"),
        [
            (b"00" * 32, 0o644, "accessible by group or others \\(mode 0644\\); run `chmod 600"),
            (b"\x01" * 33, 0o600, "holds 33 bytes"),
            (b"zz" * 32 + b"\n", 0o600, "holds 65 bytes; expected 32 raw bytes or 64 hex digits"),
            (b"", 0o600, "holds 0 bytes"),
        ],
    )
    def test_bad_key_files_are_refused(self, tmp_path: Path, content: bytes, mode: int, fragment: str):
        path = tmp_path / "key"
        path.write_bytes(content)
        os.chmod(path, mode)
        with pytest.raises(OptionError, match=fragment):
            load_key(path)

    def test_a_missing_key_file_says_how_to_make_one(self, tmp_path: Path):
        with pytest.raises(OptionError, match="fedimage keygen"):
            load_key(tmp_path / "missing")


class TestKeygenCommand:
    def test_keygen_writes_a_key_and_refuses_to_overwrite(self, tmp_path: Path, capsys):
        path = tmp_path / "pseudonyms.key"
        assert main(["keygen", str(path)]) == 0
        assert "mode 0600" in capsys.readouterr().out
        assert len(load_key(path)) == 32
        assert main(["keygen", str(path)]) == 2
        assert "already exists" in capsys.readouterr().err
