"""Training sequences cut from a prepared history, as arrays (numpy only, no TensorFlow).

A *chunk* is ``burn_in + seq_len`` consecutive rows of one key without a reset inside,
followed by the ``horizon`` rows its last origins forecast. The LSTM consumes the first
``burn_in + seq_len`` rows from zero state, as the service would; from every
``origin_stride``-th position after the burn-in the horizon is rolled out and scored
against the observed targets. :func:`build_chunks` cuts them all at once (vectorised)
for the origins of one role (training or validation); :class:`ChunkCutter` holds what
does not change between epochs, so each epoch only picks a new offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.features import FeatureSpec, calendar_features
from training.config import TrainConfig
from training.errors import ConfigError
from training.prep import Role
from training.series import SeriesSet

#: the roles of :class:`training.prep.Role` as the plain ints the role arrays hold
ROLE_TRAIN, ROLE_VAL, ROLE_TEST = int(Role.TRAIN), int(Role.VAL), int(Role.TEST)


@dataclass(frozen=True)
class Chunks:
    """Training sequences and their rollout targets, all as arrays.

    ``inputs`` ``[B, P, F]`` are the cell inputs (x then next calendar) of the consumed
    positions; origins sit at ``burn_in + origin_stride * o``. ``targets``/``weights``
    ``[B, O, H]``, ``calendar`` ``[B, O, H, C]`` (target rows), ``extras`` ``[B, O, E]``.
    """

    inputs: npt.NDArray[np.float32]
    calendar: npt.NDArray[np.float32]
    extras: npt.NDArray[np.float32]
    targets: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, idx: npt.NDArray[np.int64]) -> Chunks:
        """The chunks at ``idx``."""
        return Chunks(
            self.inputs[idx],
            self.calendar[idx],
            self.extras[idx],
            self.targets[idx],
            self.weights[idx],
        )


def next_calendar(series: SeriesSet, spec: FeatureSpec) -> npt.NDArray[np.float32]:
    """``[N, C]`` calendar features of the interval after each row (the cell's target)."""
    return calendar_features(series.ts + series.interval_s, spec)


def contiguous_segments(
    series: SeriesSet, mask: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(starts, ends)`` of maximal runs of ``mask`` rows with no reset inside."""
    edge = series.reset | np.concatenate([[True], mask[1:] != mask[:-1]])
    starts = np.flatnonzero(edge)
    ends = np.append(starts[1:], series.n_rows)
    keep = mask[starts]
    return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def build_chunks(
    series: SeriesSet,
    scaled: npt.NDArray[np.float32],
    next_cal: npt.NDArray[np.float32],
    roles: npt.NDArray[np.int8],
    config: TrainConfig,
    *,
    target_role: int,
    offset: int,
) -> Chunks:
    """Cut chunks (vectorised) whose origins lie in ``target_role`` rows.

    Chunks are taken from runs of rows with role <= ``target_role`` so a validation chunk
    may warm its state up on training rows, as the service's state would have.
    """
    h = config.horizon
    consumed = config.warmup_steps + config.seq_len
    length = consumed + h
    starts_seg, ends_seg = contiguous_segments(series, roles <= target_role)
    starts_list = []
    for s, e in zip(starts_seg, ends_seg, strict=True):
        first = s + (offset % config.seq_len if e - s > length + config.seq_len else 0)
        starts_list.append(np.arange(first, e - length + 1, config.seq_len))
    starts = np.concatenate(starts_list) if starts_list else np.zeros(0, dtype=np.int64)
    positions = starts[:, None] + np.arange(length)[None, :]
    origins = config.warmup_steps + np.arange(0, config.seq_len, config.origin_stride)
    origin_rows = positions[:, origins]  # [B, O]
    target_rows = origin_rows[:, :, None] + np.arange(1, h + 1)[None, None, :]
    cal_rows = origin_rows[:, :, None] + np.arange(h)[None, None, :]
    inputs = np.concatenate(
        [scaled[positions[:, :consumed]], next_cal[positions[:, :consumed]]], -1
    )
    weights = (
        series.observed[target_rows]
        & (roles[target_rows] == target_role)
        & (roles[origin_rows] == target_role)[:, :, None]
    )
    useful = weights.any(axis=(1, 2))
    chunks = Chunks(
        inputs=inputs.astype(np.float32),
        calendar=next_cal[cal_rows].astype(np.float32),
        extras=scaled[origin_rows][:, :, 1:].astype(np.float32),
        targets=scaled[target_rows][..., 0].astype(np.float32),
        weights=weights.astype(np.float32),
    )
    return chunks.take(np.flatnonzero(useful))


@dataclass(frozen=True)
class ChunkCutter:
    """Cuts training or validation chunks of one prepared history (see :func:`build_chunks`)."""

    series: SeriesSet
    scaled: npt.NDArray[np.float32]
    next_cal: npt.NDArray[np.float32]
    roles: npt.NDArray[np.int8]
    config: TrainConfig

    def cut(self, target_role: int, offset: int) -> Chunks:
        """Chunks whose origins lie in ``target_role`` rows, starting ``offset`` rows in."""
        return build_chunks(
            self.series,
            self.scaled,
            self.next_cal,
            self.roles,
            self.config,
            target_role=target_role,
            offset=offset,
        )

    def check_trainable(self) -> None:
        """Raise ConfigError when no training chunk fits in any key's training period."""
        if len(self.cut(ROLE_TRAIN, 0)) == 0:
            config = self.config
            length = config.warmup_steps + config.seq_len + config.horizon
            raise ConfigError(
                f"no training sequence of {length} intervals (burn_in {config.warmup_steps} + "
                f"seq_len {config.seq_len} + horizon {config.horizon}) fits in any key's "
                "training period without a long gap; use more data or smaller "
                "--seq-len/--window/--horizon"
            )
