"""The zstd level of the record batches streamcast produces.

aiokafka 0.14 compresses zstd batches at level 3 and has no setting for it (the Java
client's ``compression.zstd.level``, KIP-390). Its batch builders, the compiled one and
the pure-Python one, call the module-level ``zstd_encode`` they imported from
:mod:`aiokafka.codec`; :func:`use` points both at the same codec with a chosen level.
The level is process-wide, like the codec library: every producer of the process
compresses at the last level set (streamcast sets it from
:attr:`~streamcast.config.ClientSettings.zstd_level` whenever it builds a producer's
options, and one process has one configuration).

On streamcast's own forecast batches level 1 compresses as well as level 3 (2.89x
against 2.82x) and builds a batch in 4.0 instead of 6.3 us per record
(``bench/compression.py``); any level zstd accepts works, and consumers need nothing to
read it (the level is not part of the format).
"""

from __future__ import annotations

from types import ModuleType

from aiokafka import codec
from aiokafka.record import default_records as python_builder

try:  # the compiled builder aiokafka uses unless AIOKAFKA_NO_EXTENSIONS is set
    from aiokafka.record._crecords import default_records as compiled_builder
except ImportError:  # pragma: no cover - a platform without aiokafka's wheels
    compiled_builder = None

#: aiokafka's encoder (level 3 unless told)
UNPATCHED = codec.zstd_encode
#: the level aiokafka's builders compress at when nothing was set
AIOKAFKA_DEFAULT = 3
#: the levels zstd accepts (ZSTD_minCLevel .. ZSTD_maxCLevel)
MIN_LEVEL, MAX_LEVEL = -131_072, 22

BUILDERS: tuple[ModuleType, ...] = tuple(
    m for m in (compiled_builder, python_builder) if m is not None
)


def use(level: int) -> None:
    """Compress every zstd record batch built from now on at ``level``."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"zstd level {level} is outside {MIN_LEVEL}..{MAX_LEVEL}")

    def zstd_encode(payload: bytes | bytearray | memoryview, level_: int | None = None) -> bytes:
        return bytes(UNPATCHED(payload, level if level_ is None else level_))

    zstd_encode.level = level  # type: ignore[attr-defined]
    for builder in BUILDERS:
        builder.zstd_encode = zstd_encode  # type: ignore[attr-defined]


def current() -> int:
    """The level zstd batches are built at now."""
    encode = BUILDERS[0].zstd_encode
    return int(getattr(encode, "level", AIOKAFKA_DEFAULT))
