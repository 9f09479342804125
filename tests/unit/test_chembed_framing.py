import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chembed import framing


def test_block_layout_matches_clickhouse():
    data = b"hello clickhouse" * 100
    frame = framing.encode_block(data)
    method, csize, usize = framing.HEADER.unpack_from(frame, 16)
    assert method == 0x82
    assert csize == len(frame) - 16
    assert usize == len(data)


def test_large_payload_is_split_into_bounded_blocks():
    data = os.urandom(3 * framing.MAX_BLOCK + 17)
    frames = list(framing.encode(data))
    assert len(frames) == 4
    assert b"".join(framing.decode(frames)) == data


@given(st.binary(max_size=5000), st.lists(st.integers(1, 300), max_size=20))
def test_decoder_reassembles_any_split(data, cuts):
    wire = b"".join(framing.encode(data, block_size=777))
    pieces, pos = [], 0
    for c in cuts:
        pieces.append(wire[pos : pos + c])
        pos += c
    pieces.append(wire[pos:])
    assert b"".join(framing.decode(pieces)) == data


def test_corrupted_block_is_rejected():
    wire = bytearray(framing.encode_block(b"x" * 1000))
    wire[-1] ^= 0xFF
    with pytest.raises(framing.FramingError, match="checksum"):
        list(framing.decode([bytes(wire)]))


def test_truncated_stream_is_rejected():
    wire = framing.encode_block(b"y" * 1000)
    with pytest.raises(framing.FramingError, match="trailing"):
        list(framing.decode([wire[:-3]]))
