"""Kafka's default key partitioner for a whole batch of keys at once.

A keyed record goes to ``(murmur2(key) & 0x7fffffff) % partitions`` (the Java client's
``Utils.murmur2`` and ``toPositive``, which aiokafka's ``DefaultPartitioner`` copies in
pure Python at ~2 us per key). :func:`murmur2` hashes every key of a batch in one numpy
pass: the keys are packed into a zero-padded byte matrix and hashed one 4-byte block
position at a time, all keys together (a loop over block positions, never over keys).
No per-key memo is kept: a memo of a million keys cost ~170 bytes per key of Python
objects, more than a tenth of the key's whole state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> npt.NDArray[np.uint32]:
    """Kafka's murmur2 hash of each key (unsigned; the Java client's int, as bits)."""
    n = len(keys)
    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    blocks_of = lengths // 4
    # one spare block per key: the partial last block (zero-padded) is read as a whole
    width = (int(lengths.max()) // 4 + 1) * 4
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    padded: npt.NDArray[np.uint8]
    if (lengths == lengths[0]).all():
        padded = np.zeros((n, width), dtype=np.uint8)
        padded[:, : lengths[0]] = flat.reshape(n, int(lengths[0]))
    else:
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        spread = np.zeros(n * width, dtype=np.uint8)
        spread[np.repeat(np.arange(n) * width, lengths) + np.arange(len(flat)) - starts] = flat
        padded = spread.reshape(n, width)
    blocks = padded.view("<u4").astype(np.uint32)
    h = _SEED ^ lengths.astype(np.uint32)
    for j in range(int(blocks_of.max())):
        k = blocks[:, j] * _M
        k ^= k >> 24
        k *= _M
        live = blocks_of > j
        h[live] = (h[live] * _M) ^ k[live]
    tail = lengths % 4 > 0
    h[tail] = (h[tail] ^ blocks[np.flatnonzero(tail), blocks_of[tail]]) * _M
    h ^= h >> 13
    h *= _M
    h ^= h >> 15
    return h


def key_partitions(keys: Sequence[bytes], partitions: int) -> npt.NDArray[np.int64]:
    """The partition index (``0 <= i < partitions``) the default partitioner gives each
    key: what ``send`` picks with ``sorted(partitions_for(topic))[i]``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    return (murmur2(keys) & np.uint32(0x7FFFFFFF)).astype(np.int64) % partitions
