"""ClickHouse's compressed-block framing (HTTP ``compress=1`` / ``decompress=1``).

Each block on the wire is::

    checksum   16 bytes  CityHash128 (v1.0.2) of everything after it, two little-endian u64
    method      1 byte   0x82 = LZ4
    csize       4 bytes  little-endian, size of method+csize+usize+payload (payload + 9)
    usize       4 bytes  little-endian, size of the payload once decompressed
    payload     csize-9  a raw LZ4 block
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

LZ4_METHOD = 0x82
NONE_METHOD = 0x02
HEADER = struct.Struct("<BII")
CHECKSUM = struct.Struct("<QQ")
CHECKSUM_SIZE = 16
HEADER_SIZE = HEADER.size  # 9
MAX_BLOCK = 1 << 20  # ClickHouse's default max_compress_block_size
_U64 = (1 << 64) - 1


class FramingError(ValueError):
    """The byte stream is not valid ClickHouse compressed-block framing."""


def _checksum(block: bytes) -> bytes:
    h = CityHash128(block)
    return CHECKSUM.pack(h >> 64, h & _U64)


def encode_block(data: bytes | memoryview) -> bytes:
    """Frame one block (at most a few MiB) of uncompressed bytes."""
    payload = lz4.block.compress(data, store_size=False)
    block = HEADER.pack(LZ4_METHOD, len(payload) + HEADER_SIZE, len(data)) + payload
    return _checksum(block) + block


def encode(data: bytes | memoryview, block_size: int = MAX_BLOCK) -> Iterator[bytes]:
    """Frame ``data`` as a sequence of blocks of at most ``block_size`` bytes each."""
    view = memoryview(data)
    for off in range(0, len(view), block_size):
        yield encode_block(view[off : off + block_size])


class Decoder:
    """Incremental decoder: feed raw wire chunks, get decompressed chunks back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        out: list[bytes] = []
        while len(self._buf) >= CHECKSUM_SIZE + HEADER_SIZE:
            method, csize, usize = HEADER.unpack_from(self._buf, CHECKSUM_SIZE)
            if method not in (LZ4_METHOD, NONE_METHOD):
                raise FramingError(f"unknown compression method 0x{method:02x}")
            if csize < HEADER_SIZE:
                raise FramingError(f"compressed block size {csize} is smaller than its header")
            end = CHECKSUM_SIZE + csize
            if len(self._buf) < end:
                break
            block = bytes(self._buf[CHECKSUM_SIZE:end])
            if _checksum(block) != bytes(self._buf[:CHECKSUM_SIZE]):
                raise FramingError("checksum mismatch in compressed block")
            payload = block[HEADER_SIZE:]
            if method == LZ4_METHOD:
                out.append(lz4.block.decompress(payload, uncompressed_size=usize))
            else:
                out.append(payload)
            del self._buf[:end]
        return out

    def close(self) -> None:
        if self._buf:
            raise FramingError(f"{len(self._buf)} trailing bytes do not form a whole block")


def decode(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decode a framed stream given as an iterable of arbitrary wire chunks."""
    dec = Decoder()
    for chunk in chunks:
        yield from dec.feed(chunk)
    dec.close()
