import math
import struct

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from natgrad.utils.tbwriter import SummaryWriter, crc32c, masked_crc32c


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"a", 0xC1D04330),
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
        (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing
    ],
)
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected


def test_crc32c_incremental_and_masked():
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
    crc = crc32c(b"123456789")
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _load(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def test_scalars_round_trip_through_tensorboard(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for step in range(20):
            w.add_scalar("train/loss", 1.0 / (step + 1), step)
            w.add_scalar("return", float(step * 10), step, wall_time=1000.0 + step)
        w.add_scalar("return", -2.5, 2**40)
        w.add_scalar("weird", math.nan, 1)
        w.add_scalar("weird", 1e300, 2)  # beyond float32 -> inf
        w.add_scalar("neg_step", 3.0, -7)
    assert w.path.name.startswith("events.out.tfevents.")
    acc = _load(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["neg_step", "return", "train/loss", "weird"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(20))
    assert [e.value for e in loss] == pytest.approx([1.0 / (s + 1) for s in range(20)], rel=1e-6)
    ret = acc.Scalars("return")
    assert ret[-1].step == 2**40 and ret[-1].value == -2.5
    assert ret[3].wall_time == 1003.0 and ret[3].value == 30.0
    weird = acc.Scalars("weird")
    assert math.isnan(weird[0].value) and weird[1].value == math.inf
    assert acc.Scalars("neg_step")[0].step == -7


def test_file_framing_and_version_record(tmp_path):
    w = SummaryWriter(tmp_path)
    w.close()
    w.close()  # idempotent
    data = w.path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
    payload = data[12 : 12 + length]
    assert b"brain.Event:2" in payload
    assert struct.unpack("<I", data[12 + length : 16 + length])[0] == masked_crc32c(payload)
    assert len(data) == 16 + length


def test_two_writers_same_dir_get_distinct_files(tmp_path):
    with SummaryWriter(tmp_path) as a, SummaryWriter(tmp_path) as b:
        a.add_scalar("x", 1.0, 1)
        b.add_scalar("y", 2.0, 2)
    assert a.path != b.path
    assert sorted(_load(tmp_path).Tags()["scalars"]) == ["x", "y"]


def test_session_start_purges_stale_steps(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for step in range(10):
            w.add_scalar("r", float(step), step)
    with SummaryWriter(tmp_path) as w:  # resumed from a checkpoint at step 4
        w.add_session_start(5)
        for step in range(5, 8):
            w.add_scalar("r", 100.0 + step, step)
    events = _load(tmp_path).Scalars("r")
    assert [e.step for e in events] == list(range(8))
    assert [e.value for e in events][5:] == [105.0, 106.0, 107.0]


def test_bad_input_raises_value_error(tmp_path):
    with SummaryWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="tag"):
            w.add_scalar("", 1.0, 0)
        with pytest.raises(ValueError, match="'loss'.*real number"):
            w.add_scalar("loss", "high", 0)
        with pytest.raises(ValueError, match="step must be an integer"):
            w.add_scalar("loss", 1.0, 1.5)
    with pytest.raises(RuntimeError, match="closed"):
        w.add_scalar("loss", 1.0, 0)
    with pytest.raises(ValueError, match="flush_secs"):
        SummaryWriter(tmp_path, flush_secs=-1)


def _records(path):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        yield data[pos + 12 : pos + 12 + length]
        pos += 16 + length


def test_encoding_matches_official_protobuf(tmp_path):
    from tensorboard.compat.proto import event_pb2

    with SummaryWriter(tmp_path) as w:
        w.add_scalar("a/é", 0.25, 123, wall_time=42.5)
        w.add_session_start(-1)
    events = [event_pb2.Event.FromString(r) for r in _records(w.path)]
    assert events[0].file_version == "brain.Event:2"
    assert events[1].wall_time == 42.5 and events[1].step == 123
    (value,) = events[1].summary.value
    assert value.tag == "a/é" and value.simple_value == 0.25
    assert events[2].step == -1
    assert events[2].session_log.status == event_pb2.SessionLog.START
