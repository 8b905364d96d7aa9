"""Training sequences cut from a prepared history, as arrays (numpy only, no TensorFlow).

The LSTM runs from zero state over each sequence, as the service runs a key from its
reset; from every ``origin_stride``-th position the in-graph H-step rollout is scored:

* a segment (reset to reset, rows usable for the role) of at most ``whole_max`` rows is
  *one sequence from its first row*: the state starts exactly where the service's does,
  and its origins start at position ``window - 1`` (the service's first forecast). Short
  series are never refused: a key with a handful of targets still contributes, its
  missing targets masked;
* longer segments are cut into ``burn_in + seq_len`` steps (the burn-in defaults to the
  window) at start offsets re-drawn every epoch, origins after the burn-in.

Sequences of a batch are right-padded (padded origins weigh 0) and batched by length.
Targets are masked outside the role, where not observed, and across a reset.

Training origins are those at training rows with training targets. *Validation* origins
are every origin whose first target is a validation row (laid at the validation start of
each key, never on a grid from the series start), scored on validation targets only; the
sequence may warm up on training rows, as the service's state would have.

The loss weight of a target is ``K_t / q_key`` on ``|z - z_true|``: the absolute error in
original units divided by the key's in-sample seasonal-naive MAE -- the MASE itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamcast.core.features import FeatureSpec, calendar_features
from training.config import TrainConfig
from training.evaluate import RowInputs, actuals
from training.metrics import seasonal_scale
from training.prep import Role
from training.series import SeriesSet

#: the roles of :class:`training.prep.Role` as the plain ints the role arrays hold
ROLE_TRAIN, ROLE_VAL, ROLE_TEST = int(Role.TRAIN), int(Role.VAL), int(Role.TEST)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Chunk:
    """One sequence: its first row, its length, and its scored origins."""

    first: int
    length: int
    #: positions (in the sequence) of its origins, their rows, their target weights [O, H]
    pos: I64
    rows: I64
    weight: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Batch:
    """Padded arrays of a few chunks, what one train step reads."""

    seq_x: F32  #: [B, T, width] step inputs of the consumed rows
    seq_cal: F32  #: [B, T, C] calendar of the interval after each row
    pos: npt.NDArray[np.int32]  #: [B, O] origin positions
    cal: F32  #: [B, O, H, C] calendar rows of the targets
    target: F32  #: [B, O, H] targets in the origin's units
    weight: F32  #: [B, O, H] loss weights K / q (0: not scored)
    mask: F32  #: [B, O, H] 1 where scored

    @property
    def n_scored(self) -> int:
        return int(self.mask.sum())


class TrainingData:
    """Everything the chunks are cut from, computed once per history."""

    def __init__(
        self,
        series: SeriesSet,
        inputs: RowInputs,
        roles: npt.NDArray[np.int8],
        spec: FeatureSpec,
        config: TrainConfig,
    ) -> None:
        self.series, self.inputs, self.config = series, inputs, config
        h = config.horizon
        self.cal_next = calendar_features(series.grid.shift(series.ts, 1), spec)
        self.cal_h = (
            calendar_features(series.grid.targets(series.ts, h), spec)
            if spec.n_calendar
            else np.zeros((series.n_rows, h, 0), dtype=np.float32)
        )
        rows = np.arange(series.n_rows)
        actual, self.valid = actuals(series, rows, h)
        self.target = np.where(
            self.valid, (actual - inputs.level[:, None]) / inputs.unit[:, None], 0.0
        ).astype(np.float32)
        q = seasonal_scale(series, roles == ROLE_TRAIN, config.season_)
        self.q = q[series.key_index()]
        self.set_roles(roles)

    def set_roles(self, roles: npt.NDArray[np.int8]) -> None:
        """Use ``roles`` (e.g. validation rows turned training rows for the refit)."""
        self.roles = roles
        n, h = self.series.n_rows, self.config.horizon
        idx = np.minimum(np.arange(n)[:, None] + np.arange(1, h + 1)[None, :], max(n - 1, 0))
        self.target_role = roles[idx]

    def chunks(self, target_role: int, offset: int) -> list[Chunk]:
        """The sequences whose origins score ``target_role`` targets (module docstring)."""
        cfg, series = self.config, self.series
        window = cfg.window_
        burn = cfg.warmup_steps
        stride = cfg.origin_stride or 1
        usable = self.roles <= target_role
        edge = series.reset | np.concatenate([[True], usable[1:] != usable[:-1]])
        starts = np.flatnonzero(edge)
        ends = np.append(starts[1:], series.n_rows)
        out: list[Chunk] = []
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if not usable[s]:
                continue
            n = e - s
            if n <= cfg.whole_max:
                pieces = [(s, n, window - 1 if series.reset[s] else burn)]
            else:
                first = s + offset % cfg.seq_len
                pieces = [
                    (c0, min(burn + cfg.seq_len, e - c0), burn)
                    for c0 in range(first, e - burn - 1, cfg.seq_len)
                ]
            for c0, length, p0 in pieces:
                pos = np.arange(p0 + (offset % stride), length, stride)
                rows = c0 + pos
                if target_role == ROLE_TRAIN:
                    ok = self.roles[rows] == ROLE_TRAIN
                else:
                    ok = self.target_role[rows, 0] == target_role
                w = self.valid[rows] & (self.target_role[rows] == target_role)
                keep = ok & w.any(axis=1)
                if keep.any():
                    pos, rows = pos[keep], rows[keep]
                    out.append(Chunk(c0, int(pos[-1]) + 1, pos, rows, w[keep]))
        return out

    def batch(self, chunks: list[Chunk]) -> Batch:
        """The chunks padded into one batch."""
        t = max(c.length for c in chunks)
        o = max(len(c.pos) for c in chunks)
        b, h, n = len(chunks), self.config.horizon, self.series.n_rows
        seq_rows = np.stack([np.minimum(c.first + np.arange(t), n - 1) for c in chunks])
        pos = np.zeros((b, o), dtype=np.int32)
        orow = np.zeros((b, o), dtype=np.int64)
        w = np.zeros((b, o, h), dtype=bool)
        for i, c in enumerate(chunks):
            m = len(c.pos)
            pos[i, :m], orow[i, :m], w[i, :m] = c.pos, c.rows, c.weight
        inputs = self.inputs
        weight = np.where(w, (inputs.unit[orow] / self.q[orow])[..., None], 0.0)
        return Batch(
            seq_x=inputs.x[seq_rows],
            seq_cal=self.cal_next[seq_rows],
            pos=pos,
            cal=self.cal_h[orow].astype(np.float32),
            target=self.target[orow],
            weight=weight.astype(np.float32),
            mask=w.astype(np.float32),
        )

    def batches(self, chunks: list[Chunk], rng: np.random.Generator | None) -> list[list[Chunk]]:
        """Chunks grouped by length into batches (shuffled when ``rng`` is given)."""
        order = sorted(range(len(chunks)), key=lambda i: chunks[i].length)
        size = self.config.batch_size
        groups = [[chunks[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
        if rng is not None:
            rng.shuffle(groups)
        return groups
