"""The model artifact's self-description: the contract between training and serving.

An exported model is one ONNX file whose ``metadata_props`` carry, under the key
``streamcast``, a JSON document validated by :class:`ModelMeta` (DESIGN invariant 6).
Training writes it (``training/export.py``); the service reads it (``streamcast/model.py``)
through ONNX Runtime's ``custom_metadata_map`` and needs nothing else.

Graph signature (``schema_version`` 2), all float32, batch dimension dynamic:

========== ================= ========================================================
input      shape             meaning
========== ================= ========================================================
x          [B, 2 + E + M]    the step input of the closed interval t in the key's unit
                             ``K``: ``[u, extras..., r, lags...]``
                             (:func:`streamcast.core.features.step_inputs`)
h, c       [B, S]            LSTM state before the step, layers concatenated (S = L*U)
calendar   [B, H, C]         calendar rows of target intervals t+1..t+H (only if C > 0);
                             row t+1 also enters the step's own cell, so h_out and
                             c_out read it (a state-only step needs it too)
========== ================= ========================================================

========== ================= ========================================================
output     shape             meaning
========== ================= ========================================================
h_out      [B, S]            state after consuming x (the H-step rollout does not touch it)
c_out      [B, S]
forecast   [B, H]            forecasts of t+1..t+H in the origin's units:
                             ``y = l_t + K_t * forecast`` (recursive rollout in-graph)
========== ================= ========================================================

Schema 1 (a fixed training-period location/scale per key, ``x = [B, 1 + E]``) is refused
with one line: its inputs mean something else.

Lifecycle of a key, identical online and offline: state starts at zero; the first
``window`` intervals are buffered (warm-up); when the window is full, the key's level and
scale are set from that window (:meth:`~streamcast.core.features.LevelScale.init`), the
buffered intervals are stepped in order (each updating level and scale first), and the
step at the window's last interval yields the key's first forecast. From then on each
closed interval is one update and one step and one forecast. Gaps of up to
``gap.max_gap`` missing intervals are filled by linear interpolation and stepped (no
forecast is emitted for imputed intervals); a longer gap resets the key to warm-up.
Intervals are those of the model's :class:`GridMeta` (fixed, calendar months, trading
days).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streamcast.core.features import CalendarName, ExtraScaling, FeatureSpec, LevelScale
from streamcast.core.grid import Grid, GridKind
from streamcast.core.validation import problems
from streamcast.core.zones import zone_problem
from streamcast.errors import ModelError

METADATA_KEY = "streamcast"
#: 2: level/scale scaling that follows the series, ``x = [u, extras, r, lags]``, grids
SCHEMA_VERSION = 2

Aggregation = Literal["last", "mean", "sum", "min", "max"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GraphNames(_Frozen):
    """Names of the graph's inputs and outputs."""

    x: str = "x"
    h: str = "h"
    c: str = "c"
    calendar: str | None = "calendar"
    h_out: str = "h_out"
    c_out: str = "c_out"
    forecast: str = "forecast"


class FeatureMeta(_Frozen):
    """What the model consumes (see :class:`streamcast.core.features.FeatureSpec`)."""

    value_name: str = "value"
    extra_names: tuple[str, ...] = ()
    calendar: tuple[CalendarName, ...] = ()
    timezone: str = "UTC"
    #: exogenous extras during the rollout: held at their last observed value
    extra_rollout: Literal["hold_last"] = "hold_last"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        # checked where the artifact is read: an unknown zone would otherwise fail at the
        # first calendar feature or grid step, deep inside serving
        problem = zone_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name


class ScalingMeta(_Frozen):
    """The per-key level/scale (:class:`~streamcast.core.features.LevelScale`) and the
    global scaling of the extras."""

    scheme: Literal["level_scale"] = "level_scale"
    #: EWMA weight of a new value in the key's level and scale
    alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    #: seasonal anchors the cell sees (intervals back); empty: none
    lags: tuple[int, ...] = ()
    #: the global unit: K = kappa * max(scale, 1e-8)
    kappa: float = Field(default=1.0, gt=0.0)
    clip: float = Field(default=20.0, gt=0.0)
    extra_loc: tuple[float, ...] = ()
    extra_scale: tuple[float, ...] = ()


class GridMeta(_Frozen):
    """The interval grid (:class:`streamcast.core.grid.Grid`): fixed ``interval_s``,
    calendar months, or trading days, in the zone of ``features.timezone``."""

    kind: GridKind = "fixed"
    months: int = Field(default=0, ge=0)
    holidays: tuple[str, ...] = ()


class GapMeta(_Frozen):
    """How missing intervals are treated (training preparation and serving alike)."""

    policy: Literal["linear"] = "linear"
    max_gap: int = Field(default=3, ge=0)


class CalibrationMeta(_Frozen):
    """Prediction-interval calibration: per-step quantiles of *scaled* residuals."""

    levels: tuple[float, ...] = ()
    #: lower[i][k], upper[i][k]: level i, horizon step k
    lower: tuple[tuple[float, ...], ...] = ()
    upper: tuple[tuple[float, ...], ...] = ()


class DriftMeta(_Frozen):
    """The drift detectors' reference, measured by training on the validation period.

    Error drift standardises one-step residuals with ``residual_mean[0]`` and
    ``residual_std[0]``; input drift compares a key's recent window of *scaled* values
    (``u = (value - l) / K``, the step input ``x[:, 0]``, as the model sees them)
    with the training distribution, given by its quantiles ``input_quantiles`` at
    probabilities ``input_probs`` (:mod:`streamcast.core.drift`).
    """

    reference: str = ""
    #: per horizon step: mean, std and |p95| of scaled residuals (actual - forecast) / K
    residual_mean: tuple[float, ...] = ()
    residual_std: tuple[float, ...] = ()
    abs_residual_p95: tuple[float, ...] = ()
    n_origins: int = 0
    #: quantiles of the scaled training values at ``input_probs`` (empty: no input drift)
    input_probs: tuple[float, ...] = ()
    input_quantiles: tuple[float, ...] = ()
    #: the Kolmogorov-Smirnov distance of a ``window`` of scaled values above which a
    #: key's inputs have drifted, calibrated on the validation period
    input_threshold: float | None = None
    #: share of validation windows above ``input_threshold`` (the measured false alarms)
    input_false_alarm_rate: float | None = None


class SelfTestMeta(_Frozen):
    """A sample the exporter ran through the exported graph, with its outputs: a loaded
    model that does not reproduce them (corrupt weights, another graph) is refused."""

    #: [B, 2 + E + M], [B, S], [B, S], [B, H, C] (empty without calendar features)
    x: tuple[tuple[float, ...], ...] = ()
    h: tuple[tuple[float, ...], ...] = ()
    c: tuple[tuple[float, ...], ...] = ()
    calendar: tuple[tuple[tuple[float, ...], ...], ...] = ()
    #: the graph's outputs for them: [B, S], [B, S], [B, H]
    h_out: tuple[tuple[float, ...], ...] = ()
    c_out: tuple[tuple[float, ...], ...] = ()
    forecast: tuple[tuple[float, ...], ...] = ()
    #: allowed |difference| (ONNX Runtime builds and CPUs differ in the last bits)
    atol: float = 1e-4


class SourceColumns(_Frozen):
    """The columns of the file the model was trained on, which ``streamcast-train
    evaluate`` reads by default (a built-in dataset: those of its exported CSV)."""

    key: str | None = None
    time: str
    value: str
    features: tuple[str, ...] = ()


class TrainingMeta(_Frozen):
    """Where the model came from and how good it was."""

    data_fingerprint: str = ""
    data_source: str = ""
    #: the training file's columns (None: a model exported before they were recorded)
    columns: SourceColumns | None = None
    n_keys: int = 0
    n_rows: int = 0
    seed: int = 0
    #: the shrinkage of the LSTM's forecast toward naive, baked into the graph (1: none;
    #: 0: the model forecasts naive, its validation gain was not significant)
    shrinkage: float = 1.0
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    config: dict[str, object] = Field(default_factory=dict)


class ModelMeta(_Frozen):
    """Everything serving needs, stored in the ONNX file's metadata."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    created_at: str
    graph: GraphNames = GraphNames()
    state_size: int = Field(gt=0)
    layers: int = Field(default=1, gt=0)
    units: int = Field(gt=0)
    window: int = Field(gt=0)
    horizon: int = Field(gt=0)
    interval_s: int = Field(gt=0)
    aggregation: Aggregation = "last"
    #: forecasts and bands floored at 0 (counts, volumes: ``fit --non-negative``),
    #: online as offline (:func:`streamcast.core.features.floor_non_negative`)
    non_negative: bool = False
    grid: GridMeta = GridMeta()
    features: FeatureMeta = FeatureMeta()
    scaling: ScalingMeta = ScalingMeta()
    gap: GapMeta = GapMeta()
    calibration: CalibrationMeta = CalibrationMeta()
    drift: DriftMeta = DriftMeta()
    self_test: SelfTestMeta = SelfTestMeta()
    training: TrainingMeta = TrainingMeta()

    @model_validator(mode="after")
    def _window_holds_lags(self) -> ModelMeta:
        if self.window < self.level_scale().max_lag:
            raise ValueError(
                f"window {self.window} is shorter than the longest lag {max(self.scaling.lags)}"
            )
        return self

    def feature_spec(self) -> FeatureSpec:
        """The shared feature description used by both halves."""
        return FeatureSpec(
            interval_s=self.interval_s,
            value_name=self.features.value_name,
            extra_names=self.features.extra_names,
            calendar=self.features.calendar,
            timezone=self.features.timezone,
        )

    def level_scale(self) -> LevelScale:
        """The per-key level/scale scheme of the inputs and forecasts."""
        sc = self.scaling
        return LevelScale(alpha=sc.alpha, lags=sc.lags, kappa=sc.kappa, clip=sc.clip)

    def time_grid(self) -> Grid:
        """The interval grid the model steps on."""
        grid = self.grid
        if grid.kind == "months":
            return Grid.calendar_months(grid.months, self.features.timezone)
        if grid.kind == "trading_days":
            return Grid.trading_days(self.features.timezone, grid.holidays)
        return Grid.fixed(self.interval_s)

    @property
    def step_width(self) -> int:
        """Width of the graph's ``x`` input."""
        return self.level_scale().step_width(len(self.features.extra_names))

    def extra_scaling(self) -> ExtraScaling:
        """Global scaling of the extra features."""
        return ExtraScaling(loc=self.scaling.extra_loc, scale=self.scaling.extra_scale)

    def to_json(self) -> str:
        """Serialised form stored under :data:`METADATA_KEY`."""
        return self.model_dump_json()

    @classmethod
    def from_metadata_map(cls, props: dict[str, str]) -> ModelMeta:
        """Parse the ``metadata_props`` map of an ONNX model; fails on other schema versions.

        Raises ``ValueError`` with one line: every invalid field named with its problem.
        """
        raw = props.get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"model has no '{METADATA_KEY}' metadata: not exported by streamcast-train"
            )
        # the schema first: an old artifact's fields would otherwise read as many errors
        try:
            version = json.loads(raw).get("schema_version")
        except (ValueError, AttributeError):
            version = None
        if isinstance(version, int) and version != SCHEMA_VERSION:
            raise ValueError(
                f"model metadata schema {version} is not supported (this streamcast reads "
                f"schema {SCHEMA_VERSION}: level/scale inputs that follow the series); "
                "train the model again with this streamcast-train"
            )
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            # pydantic's own text spans lines and links to its docs: one line per field
            raise ValueError("; ".join(problems(exc))) from None


def read_meta(path: str | Path) -> ModelMeta:
    """The metadata of the artifact at ``path``, read without ONNX Runtime (the graph is
    not checked: :meth:`~streamcast.core.model.OnnxStepModel.load` does);
    :class:`~streamcast.errors.ModelError` if it is not a streamcast artifact."""
    import onnx  # noqa: PLC0415 - ~0.7 s to import: only the commands that read a model

    file = Path(path)
    try:
        proto = onnx.load(str(file), load_external_data=False)
    except Exception as err:  # OSError, protobuf's DecodeError, ...
        raise ModelError(f"{file} is not a readable ONNX model: {err}") from err
    try:
        return ModelMeta.from_metadata_map({p.key: p.value for p in proto.metadata_props})
    except ValueError as err:
        raise ModelError(f"{file}: invalid streamcast metadata: {err}") from err
