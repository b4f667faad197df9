"""SecAgg+ over the wire: message records, their checks, and client state saved and restored per stage."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cryptography")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedimage.privacy.secagg import (
    PRGS,
    DropoutPlan,
    Quantizer,
    SecAggAbort,
    SecAggClient,
    SecAggError,
    SecAggServer,
    SecretSource,
    Stage,
    random_regular_graph,
    simulate_round,
    wire,
)
from fedimage.privacy.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)

# -- helpers ----------------------------------------------------------------------------------------


def same(one, other) -> bool:
    """Message equality, with the masked words compared by value."""
    if isinstance(one, MaskedInput) or isinstance(other, MaskedInput):
        return (
            type(one) is type(other)
            and one.sender == other.sender
            and one.masked.dtype == other.masked.dtype
            and np.array_equal(one.masked, other.masked)
        )
    return one == other


def plain_copy(record):
    """What a process boundary leaves of a record: a fresh dict with fresh lists."""
    return {key: list(value) if isinstance(value, list) else value for key, value in dict(record).items()}


def through_flower(record):
    """The record as a Flower ConfigRecord after protobuf serialization and back."""
    from flwr.app import ConfigRecord

    return ConfigRecord.inflate(ConfigRecord(dict(record)).deflate())


CARRIERS = {"plain": plain_copy, "flower": through_flower}


@pytest.fixture(params=sorted(CARRIERS))
def carry(request):
    if request.param == "flower":
        pytest.importorskip("flwr")
    return CARRIERS[request.param]


def check_values(record) -> None:
    """Only Flower's value types, lists of one type, and no empty list."""
    for key, value in record.items():
        assert isinstance(key, str)
        if isinstance(value, list):
            assert value, f"{key} is an empty list"
            assert len({type(item) for item in value}) == 1, key
            value = value[0]
        assert type(value) in (int, float, str, bytes, bool), key


def sample_round(n: int = 8, dimension: int = 16, seed: int = 5):
    """Every message of a real round (client 6 drops before its masked input), and client states."""
    quantizer = Quantizer.for_cohort(1.0, n)
    secrets = SecretSource.from_seed(seed)
    server = SecAggServer(n, quantizer, dimension, graph_seed=seed, secrets=secrets.child("server"))
    clients = {i: SecAggClient(i, server.setup, secrets.child(str(i))) for i in range(n)}
    messages: list = [server.setup]
    states = [clients[0].export_state()]
    for client in clients.values():
        message = client.advertise_keys()
        messages.append(message)
        server.receive(message)
    states.append(clients[0].export_state())
    for i, broadcast in server.broadcast_keys().items():
        message = clients[i].share_keys(broadcast)
        messages += [broadcast, message]
        server.receive(message)
    states.append(clients[0].export_state())
    for i, delivery in server.deliver_shares().items():
        messages.append(delivery)
        if i != 6:
            message = clients[i].masked_input(delivery, np.linspace(-1, 1, dimension))
            messages.append(message)
            server.receive(message)
    states.append(clients[0].export_state())
    request = server.request_unmask()
    messages.append(request)
    for i in sorted(request.survivors):
        message = clients[i].unmask(request)
        messages.append(message)
        server.receive(message)
    states.append(clients[0].export_state())
    server.finish()
    return server.setup, messages, states


SETUP, ROUND_MESSAGES, STATES = sample_round()
EDGE_MESSAGES = [
    KeysBroadcast(0, {}),
    ShareKeys(1, {}, bytes(32)),
    SharesDelivery(2, {}),
    MaskedInput(3, np.zeros(0, np.uint32)),
    UnmaskRequest(frozenset(), frozenset()),
    UnmaskRequest(frozenset({0, 1}), frozenset()),
    UnmaskResponse(3, {}, {}),
    UnmaskResponse(3, {1: b"s"}, {}),
    AdvertiseKeys(0, b"", b""),
]
MESSAGES = ROUND_MESSAGES + EDGE_MESSAGES
RECORDS = [wire.to_record(message) for message in MESSAGES] + STATES
RECORD_IDS = [f"{record[wire.KIND_KEY]}{i}" for i, record in enumerate(RECORDS)]


def decode(record):
    """A message record through ``from_record``, a state record through ``SecAggClient.restore``."""
    if record.get(wire.KIND_KEY) == "client-state":
        return SecAggClient.restore(record)
    return wire.from_record(record)


# -- strategies -------------------------------------------------------------------------------------

indices = st.integers(0, 2**32 - 1)
small_indices = st.integers(0, 40)
blobs = st.binary(max_size=48)
index_maps = st.dictionaries(small_indices, blobs, max_size=6)


@st.composite
def setups(draw) -> RoundSetup:
    n = draw(st.integers(3, 14))
    degree = draw(st.sampled_from(sorted({n - 1, *range(2, n - 1, 2)})))
    bits = draw(st.integers(max(8, n.bit_length() + 1), 64))
    return RoundSetup(
        round_id=draw(st.binary(min_size=1, max_size=32)),
        neighbours=random_regular_graph(n, degree, draw(st.integers(0, 1000))),
        threshold=draw(st.integers(1, degree)),
        quantizer=Quantizer.for_cohort(draw(st.floats(1e-6, 1e6)), n, bits),
        dimension=draw(st.integers(1, 2**40)),
        prg=draw(st.sampled_from(PRGS)),
    )


messages = st.one_of(
    setups(),
    st.builds(AdvertiseKeys, indices, blobs, blobs),
    st.builds(KeysBroadcast, indices, st.dictionaries(indices, st.tuples(blobs, blobs), max_size=6)),
    st.builds(ShareKeys, indices, st.dictionaries(indices, blobs, max_size=6), blobs),
    st.builds(SharesDelivery, indices, index_maps),
    st.builds(
        MaskedInput,
        indices,
        hnp.arrays(
            st.sampled_from([np.uint32, np.uint64]), st.integers(0, 64), elements=st.integers(0, 2**32 - 1)
        ),
    ),
    st.builds(UnmaskRequest, st.frozensets(indices, max_size=8), st.frozensets(indices, max_size=8)),
    st.builds(UnmaskResponse, indices, index_maps, index_maps),
)
values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.booleans(),
    st.lists(st.integers(-5, 50), min_size=1, max_size=5),
    st.lists(st.binary(max_size=70), min_size=1, max_size=5),
    st.lists(st.text(max_size=3), min_size=1, max_size=3),
    st.just([]),
)


# -- messages ---------------------------------------------------------------------------------------


class TestRoundTrip:
    @given(message=messages)
    @settings(max_examples=200, deadline=None)
    def test_every_message_round_trips_equal(self, message):
        record = wire.to_record(message)
        check_values(record)
        back = wire.from_record(plain_copy(record))
        assert same(back, message)
        assert type(back) is type(message)
        assert wire.record_bytes(record) >= 16  # kind and version at least

    @pytest.mark.parametrize(
        ("message", "setup"),
        [(m, SETUP) for m in ROUND_MESSAGES] + [(m, None) for m in EDGE_MESSAGES],
        ids=[type(m).__name__ for m in MESSAGES],
    )
    def test_every_message_round_trips_through_a_flower_config_record(self, message, setup):
        pytest.importorskip("flwr")
        from flwr.app import ConfigRecord

        record = wire.to_record(message)
        check_values(record)
        assert same(wire.from_record(through_flower(record), type(message), setup=setup), message)
        # our payload count is Flower's byte count without the keys (Flower's fails on empty bytes,
        # which only the invalid edge messages have, and on an empty list, which no record has)
        if all(value != b"" for value in record.values()):
            assert wire.record_bytes(record) == ConfigRecord(record).count_bytes() - sum(map(len, record))

    @pytest.mark.parametrize("state", STATES, ids=[f"after-{i}" for i in range(len(STATES))])
    def test_client_states_round_trip_through_a_flower_config_record(self, state):
        pytest.importorskip("flwr")
        check_values(state)
        assert all(value != b"" for value in state.values())
        restored = SecAggClient.restore(through_flower(state), round_id=SETUP.round_id, setup=SETUP)
        assert restored.export_state() == state

    def test_masked_words_are_little_endian_and_writable(self):
        message = MaskedInput(2, np.array([1, 2**32 - 1], dtype=">u4"))
        record = wire.to_record(message)
        assert record["masked"] == b"\x01\x00\x00\x00\xff\xff\xff\xff"
        assert (record["masked-dtype"], record["masked-length"]) == ("uint32", 2)
        back = wire.from_record(record).masked
        assert back.dtype == np.uint32 and back.flags.writeable and back.tolist() == [1, 2**32 - 1]

    def test_only_word_arrays_and_messages_are_encoded(self):
        with pytest.raises(SecAggError, match="cannot encode masked: expected a 1-D uint32 or uint64 array"):
            wire.to_record(MaskedInput(0, np.zeros(3, np.float32)))
        with pytest.raises(SecAggError, match="cannot encode a dict"):
            wire.to_record({"sender": 1})
        assert wire.kind_of(wire.to_record(SETUP)) == "round-setup"
        assert wire.kind_of(STATES[0]) == "client-state"

    def test_empty_collections_are_left_out_with_a_zero_count(self):
        record = wire.to_record(UnmaskResponse(4, {}, {2: b"x"}))
        assert (
            record["seed-shares-count"] == 0 and "seed-owners" not in record and "seed-shares" not in record
        )
        assert record["key-owners"] == [2] and record["key-shares"] == [b"x"]
        explicit = {**record, "seed-owners": [], "seed-shares": []}  # an empty list is read as empty too
        assert wire.from_record(explicit) == UnmaskResponse(4, {}, {2: b"x"})

    def test_record_bytes(self):
        record = wire.to_record(AdvertiseKeys(3, bytes(32), bytes(32)))
        assert wire.record_bytes(record) == len("advertise-keys") + 8 + 8 + 32 + 32
        assert wire.record_bytes({"a": [1, 2], "b": [b"xy", b""], "c": True, "d": "é"}) == 16 + 2 + 1 + 2
        with pytest.raises(SecAggError, match="'a' holds a NoneType"):
            wire.record_bytes({"a": None})


class TestDecodeErrors:
    @pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
    def test_a_missing_field_is_named(self, record):
        for key in record:
            broken = {k: v for k, v in record.items() if k != key}
            with pytest.raises(SecAggError, match=f"'{key}'") as error:
                decode(broken)
            assert "\n" not in str(error.value)

    @pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
    def test_a_field_of_the_wrong_type_is_named(self, record):
        for key, value in record.items():
            wrong = [1.5, b"x", "x", True, [b"x"], [1]]
            for replacement in wrong:
                if type(replacement) is type(value) and not isinstance(value, list):
                    continue
                if (
                    isinstance(value, list)
                    and isinstance(replacement, list)
                    and type(replacement[0]) is type(value[0])
                ):
                    continue
                if (
                    isinstance(value, float)
                    and isinstance(replacement, int)
                    and not isinstance(replacement, bool)
                ):
                    continue
                with pytest.raises(SecAggError, match=f"'{key}'"):
                    decode({**record, key: replacement})

    @pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
    def test_a_list_of_the_wrong_length_is_named(self, record):
        for key, value in record.items():
            if isinstance(value, list):
                for changed in (value[:-1], [*value, value[-1]]):
                    with pytest.raises(SecAggError, match=f"'{key}'"):
                        decode({**record, key: changed})

    @pytest.mark.parametrize("record", RECORDS, ids=RECORD_IDS)
    def test_a_count_that_disagrees_with_its_lists_is_an_error(self, record):
        for key, value in record.items():
            if key.endswith("-count"):
                fragment = f"has {value} entries, expected {value + 1}" if value else "is missing"
                with pytest.raises(SecAggError, match=fragment):
                    decode({**record, key: value + 1})

    def test_masked_bytes_must_fill_whole_words_of_the_stated_length(self):
        record = wire.to_record(MaskedInput(1, np.arange(5, dtype=np.uint64)))
        with pytest.raises(SecAggError, match="'masked' has 39 bytes, not a multiple of the 8-byte uint64"):
            wire.from_record({**record, "masked": record["masked"][:-1]})
        with pytest.raises(SecAggError, match="'masked' holds 4 words, but masked-length says 5"):
            wire.from_record({**record, "masked": record["masked"][:-8]})
        with pytest.raises(SecAggError, match="'masked-dtype' is 'float32'"):
            wire.from_record({**record, "masked-dtype": "float32"})

    def test_a_masked_input_must_fit_the_rounds_dimension_and_words(self):
        dimension = SETUP.dimension
        good = wire.to_record(MaskedInput(1, np.zeros(dimension, np.uint32)))
        assert wire.from_record(good, setup=SETUP).masked.shape == (dimension,)
        short = wire.to_record(MaskedInput(1, np.zeros(dimension - 1, np.uint32)))
        with pytest.raises(
            SecAggError, match=f"'masked' holds {dimension - 1} words, but the round's dimension is"
        ):
            wire.from_record(short, setup=SETUP)
        wide = wire.to_record(MaskedInput(1, np.zeros(dimension, np.uint64)))
        with pytest.raises(SecAggError, match="'masked-dtype' is uint64, but the round's words are uint32"):
            wire.from_record(wide, setup=SETUP)

    def test_kind_version_and_expected_class(self):
        record = wire.to_record(AdvertiseKeys(0, b"a", b"b"))
        with pytest.raises(SecAggError, match="'secagg-kind' is 'nonsense', not one of round-setup"):
            wire.from_record({**record, "secagg-kind": "nonsense"})
        with pytest.raises(SecAggError, match="'secagg-version' is 2"):
            wire.from_record({**record, "secagg-version": 2})
        with pytest.raises(SecAggError, match="'secagg-kind' is 'advertise-keys', expected 'share-keys'"):
            wire.from_record(record, ShareKeys)
        with pytest.raises(SecAggError, match="must be a mapping, got list"):
            wire.from_record([1, 2])
        with pytest.raises(SecAggError, match="'secagg-kind' is 'client-state'"):
            wire.from_record(STATES[0])

    # bad client indices: (record change, message fragment)
    @pytest.mark.parametrize(
        ("change", "fragment"),
        [
            ({"senders": [1, 1]}, "'senders' repeats a client index"),
            ({"senders": [-1, 2]}, "'senders' is -1, below 0"),
            ({"recipient": 2**32}, "'recipient' is 4294967296, not below 4294967296"),
        ],
    )
    def test_bad_indices(self, change, fragment):
        record = wire.to_record(SharesDelivery(0, {1: b"a", 2: b"b"}))
        with pytest.raises(SecAggError, match=fragment):
            wire.from_record({**record, **change})

    def test_indices_are_bounded_by_the_rounds_clients(self):
        record = wire.to_record(UnmaskRequest(frozenset({0, 1, 8}), frozenset()))
        assert wire.from_record(record).survivors == {0, 1, 8}
        with pytest.raises(SecAggError, match="'survivors' is 8, not below 8"):
            wire.from_record(record, setup=SETUP)

    # malformed setups: (record change, message fragment)
    @pytest.mark.parametrize(
        ("change", "fragment"),
        [
            ({"degrees": [1, 2, 0], "neighbours": [1, 0, 2]}, "not symmetric: 2 is a neighbour of 1 only"),
            ({"neighbours": [0, 2, 0, 2, 0, 1]}, "lists client 0 as its own neighbour"),
            ({"degrees": [1, 1, 0]}, "'neighbours' has 6 entries, expected 2"),
            ({"degrees": [2, -2, 4]}, "'degrees' is -2, below 0"),
            ({"prg": "rc4"}, "'prg' is 'rc4'"),
            ({"threshold": 0}, "'threshold' is 0, below 1"),
            ({"dimension": 0}, "'dimension' is 0, below 1"),
            ({"round-id": b""}, "'round-id' is empty"),
            ({"quantizer-clip": float("nan")}, "'quantizer-clip' is nan"),
            ({"quantizer-modulus-bits": 65}, "'quantizer-modulus-bits' is 65, not below 65"),
            ({"quantizer-levels": 2**33}, "'quantizer-levels' is invalid: levels must be in 2..4294967296"),
        ],
    )
    def test_malformed_setups(self, change, fragment):
        setup = RoundSetup(b"r", ((1, 2), (0, 2), (0, 1)), 2, Quantizer(1.0, 5), 3, "chacha20")
        record = wire.to_record(setup)
        assert wire.from_record(record) == setup
        with pytest.raises(SecAggError, match=fragment):
            wire.from_record({**record, **change})

    @given(data=st.data(), which=st.integers(0, len(RECORDS) - 1))
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_a_mangled_record_raises_only_secagg_errors(self, data, which):
        record = dict(RECORDS[which])
        for _ in range(data.draw(st.integers(1, 3))):
            key = data.draw(st.sampled_from([*sorted(record), "secagg-extra"]))
            action = data.draw(st.sampled_from(["delete", "replace", "shorten"]))
            if action == "delete":
                record.pop(key, None)
            elif action == "replace" or not isinstance(record.get(key), list | bytes):
                record[key] = data.draw(values)
            else:
                record[key] = record[key][: data.draw(st.integers(0, max(0, len(record[key]) - 1)))]
        try:
            decode(record)
        except SecAggError as error:
            assert "\n" not in str(error)


# -- a round over the wire --------------------------------------------------------------------------


def wire_round(vectors, quantizer, dimension, dropouts, seed, carry):
    """``simulate_round``, with every message crossing records and every client restored at every stage."""
    ids = sorted(vectors)
    n = len(ids)
    secrets = SecretSource.from_seed(seed)
    server = SecAggServer(n, quantizer, dimension, graph_seed=seed, secrets=secrets.child("server"))
    round_id = server.setup.round_id
    setup_record = carry(wire.to_record(server.setup))
    states = {}
    for i in range(n):
        setup = wire.from_record(setup_record, RoundSetup)
        states[i] = carry(SecAggClient(i, setup, secrets.child(f"client {i}")).export_state())
    dropped: dict = {}
    inbox: dict = dict.fromkeys(range(n))

    def run_stage(stage, act, close):
        for i in range(n):
            if ids[i] in dropped:
                continue
            if ids[i] in dropouts.at(stage) or (stage > Stage.ADVERTISE_KEYS and inbox.get(i) is None):
                dropped[ids[i]] = stage
                continue
            client = SecAggClient.restore(
                states[i], round_id=round_id, secrets=secrets.child(f"client {i} at {stage.name}")
            )
            assert client.export_state() == plain_copy(states[i])
            message_in = None if inbox[i] is None else wire.from_record(inbox[i], setup=client.setup)
            try:
                message = act(client, message_in)
            except SecAggAbort:
                dropped[ids[i]] = stage
                continue
            finally:
                states[i] = carry(client.export_state())
            server.receive(wire.from_record(carry(wire.to_record(message)), setup=server.setup))
        return close()

    broadcasts = run_stage(Stage.ADVERTISE_KEYS, lambda c, _: c.advertise_keys(), server.broadcast_keys)
    inbox = {i: carry(wire.to_record(message)) for i, message in broadcasts.items()}
    deliveries = run_stage(Stage.SHARE_KEYS, lambda c, m: c.share_keys(m), server.deliver_shares)
    inbox = {i: carry(wire.to_record(message)) for i, message in deliveries.items()}
    request = run_stage(
        Stage.MASKED_INPUT, lambda c, m: c.masked_input(m, vectors[ids[c.index]]), server.request_unmask
    )
    inbox = {i: carry(wire.to_record(request)) for i in request.survivors}
    result = run_stage(Stage.UNMASK, lambda c, m: c.unmask(m), server.finish)
    for i in request.survivors:  # a finished client refuses a second unmask request
        if ids[i] not in dropped:
            with pytest.raises(SecAggError, match="asked for stage UNMASK while at the end of the round"):
                SecAggClient.restore(states[i]).unmask(request)
    return result, dropped


def vectors_for(n: int, dimension: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"user{i:02d}": rng.uniform(-1.2, 1.2, dimension) for i in range(n)}


def check_against_simulation(vectors, dropouts, seed, carry, bits=32, prg="chacha20"):
    quantizer = Quantizer.for_cohort(1.0, len(vectors), bits)
    dimension = len(next(iter(vectors.values())))
    report = simulate_round(
        list(vectors), vectors.__getitem__, quantizer, dimension, dropouts=dropouts, seed=seed, prg=prg
    )
    result, dropped = wire_round(vectors, quantizer, dimension, dropouts, seed, carry)
    assert np.array_equal(result.total, report.total)
    assert [sorted(vectors)[i] for i in sorted(result.contributors)] == report.contributors
    assert dropped == report.dropped
    return report


class TestRoundOverTheWire:
    # dropouts: a stage, and how many of the 16 clients vanish before their message of that stage
    @pytest.mark.parametrize("stage", [None, *Stage])
    def test_the_sum_is_the_simulated_sum(self, stage, carry):
        vectors = vectors_for(16, 40, seed=3)
        names = sorted(vectors)
        plan = DropoutPlan() if stage is None else DropoutPlan(**{stage.name.lower(): names[2:5]})
        report = check_against_simulation(vectors, plan, seed=3, carry=carry)
        assert len(report.dropped) == (0 if stage is None else 3)

    def test_dropouts_at_every_stage_at_once(self, carry):
        vectors = vectors_for(24, 20, seed=4)
        names = sorted(vectors)
        plan = DropoutPlan(names[0:2], names[6:8], names[12:14], names[18:20])
        report = check_against_simulation(vectors, plan, seed=4, carry=carry, bits=48, prg="aes-ctr")
        assert len(report.contributors) == 24 - 6

    @given(
        n=st.integers(3, 14),
        dimension=st.integers(1, 30),
        rates=st.lists(st.sampled_from([0.0, 0.1, 0.25]), min_size=4, max_size=4),
        seed=st.integers(0, 2**31),
    )
    @settings(max_examples=15, deadline=None)
    def test_random_rounds_match_the_simulation(self, n, dimension, rates, seed):
        vectors = vectors_for(n, dimension, seed)
        plan = DropoutPlan.random(vectors, rates, seed)
        try:
            simulate_round(
                list(vectors),
                vectors.__getitem__,
                Quantizer.for_cohort(1.0, n),
                dimension,
                dropouts=plan,
                seed=seed,
            )
        except SecAggAbort as abort:  # then the round over the wire aborts alike
            with pytest.raises(SecAggAbort, match=str(abort).split(":")[0]):
                wire_round(vectors, Quantizer.for_cohort(1.0, n), dimension, plan, seed, plain_copy)
            return
        check_against_simulation(vectors, plan, seed, plain_copy)


# -- client state -----------------------------------------------------------------------------------


class TestClientState:
    def test_export_restore_export_is_the_identity_at_every_stage(self):
        for state in STATES:
            assert SecAggClient.restore(plain_copy(state)).export_state() == state
        assert [state["next-stage"] for state in STATES] == [0, 1, 2, 3, 4]

    def test_a_restored_client_continues_the_round(self):
        restored = SecAggClient.restore(STATES[2], setup=SETUP)
        assert repr(restored) == "<SecAggClient 0 of 8, next stage MASKED_INPUT>"
        with pytest.raises(SecAggError, match="asked for stage SHARE_KEYS while at MASKED_INPUT"):
            restored.share_keys(KeysBroadcast(0, {}))

    def test_a_state_of_another_round_is_refused(self):
        other, _, other_states = sample_round(seed=6)
        assert other.round_id != SETUP.round_id
        with pytest.raises(
            SecAggError, match=f"is of round {SETUP.round_id.hex()}, not {other.round_id.hex()}"
        ):
            SecAggClient.restore(STATES[1], round_id=other.round_id)
        with pytest.raises(SecAggError, match="with another setup"):
            SecAggClient.restore(STATES[1], setup=other)
        same_id = RoundSetup(
            SETUP.round_id, SETUP.neighbours, SETUP.threshold + 1, SETUP.quantizer, 16, "chacha20"
        )
        with pytest.raises(SecAggError, match="with another setup"):
            SecAggClient.restore(STATES[1], setup=same_id)
        assert SecAggClient.restore(other_states[1], round_id=other.round_id).setup == other

    # inconsistent states: (state index, change, message fragment)
    @pytest.mark.parametrize(
        ("which", "change", "fragment"),
        [
            (0, {"cipher-private-key": bytes(32)}, "'cipher-private-key' has 32 bytes, expected 0"),
            (1, {"mask-private-key": b""}, "'mask-private-key' has 0 bytes, expected 32"),
            (1, {"mask-private-key": bytes(31)}, "'mask-private-key' has 31 bytes, expected 32"),
            (2, {"peers": [0, *STATES[2]["peers"][1:]]}, "'peers' lists client 0, who is not a neighbour"),
            (1, {"seed": bytes(32)}, "'seed' has 32 bytes, expected 0"),
            (2, {"seed": bytes(31)}, "'seed' has 31 bytes, expected 32"),
            (3, {"held-seed-shares": [b"x", *STATES[3]["held-seed-shares"][1:]]}, "shares are not 66 bytes"),
            (0, {"index": 8}, "'index' is 8, not below 8"),
            (0, {"next-stage": 5}, "'next-stage' is 5, not below 5"),
            (0, {"secagg-kind": "round-setup"}, "'secagg-kind' is 'round-setup', expected 'client-state'"),
        ],
    )
    def test_an_inconsistent_state_is_refused(self, which, change, fragment):
        with pytest.raises(SecAggError, match=fragment):
            SecAggClient.restore({**STATES[which], **change})

    def test_an_unmask_request_naming_unknown_clients_is_refused(self):
        client = SecAggClient.restore(STATES[3])
        with pytest.raises(SecAggError, match=r"names unknown clients \[99\]"):
            client.unmask(UnmaskRequest(frozenset({0, 1, 2, 3, 4, 5, 7, 99}), frozenset({6})))

    def test_the_state_of_a_client_that_refused_a_stage_round_trips(self):
        client = SecAggClient.restore(STATES[1])
        with pytest.raises(SecAggAbort, match="fewer than the threshold"):
            client.share_keys(KeysBroadcast(0, {}))
        state = client.export_state()
        assert state["next-stage"] == Stage.MASKED_INPUT and "seed" not in state and state["peers-count"] == 0
        restored = SecAggClient.restore(state)
        assert restored.export_state() == state
        with pytest.raises(SecAggAbort, match="only 0 neighbours shared keys"):
            restored.masked_input(SharesDelivery(0, {}), np.zeros(SETUP.dimension))

    @given(data=st.data(), stage=st.sampled_from([1, 2, 3]))
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_a_mangled_message_makes_a_client_raise_only_secagg_errors(self, data, stage):
        """Client 0's own message of ``stage`` with fields deleted, replaced or cut short."""
        kind = {1: KeysBroadcast, 2: SharesDelivery, 3: UnmaskRequest}[stage]
        original = next(m for m in ROUND_MESSAGES if type(m) is kind and getattr(m, "recipient", 0) == 0)
        record = wire.to_record(original)
        for _ in range(data.draw(st.integers(1, 2))):
            key = data.draw(st.sampled_from(sorted(record)))
            action = data.draw(st.sampled_from(["delete", "replace", "shorten", "flip"]))
            value = record.get(key)
            if action == "delete":
                record.pop(key)
            elif action == "shorten" and isinstance(value, list | bytes) and value:
                record[key] = value[: data.draw(st.integers(0, len(value) - 1))]
            elif action == "flip" and isinstance(value, list) and value and isinstance(value[0], bytes):
                position = data.draw(st.integers(0, len(value) - 1))
                record[key] = [*value[:position], bytes(70), *value[position + 1 :]]
            else:
                record[key] = data.draw(values)
        client = SecAggClient.restore(STATES[stage])
        try:
            message = wire.from_record(record, kind, setup=client.setup)
            if stage == 1:
                client.share_keys(message)
            elif stage == 2:
                client.masked_input(message, np.zeros(SETUP.dimension))
            else:
                client.unmask(message)
        except SecAggError as error:
            assert "\n" not in str(error)
