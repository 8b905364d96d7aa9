"""The model artifact's self-description: the contract between training and serving.

An exported model is one ONNX file whose ``metadata_props`` carry, under the key
``streamcast``, a JSON document validated by :class:`ModelMeta` (DESIGN invariant 6).
Training writes it (``training/export.py``); the service reads it (``streamcast/model.py``)
through ONNX Runtime's ``custom_metadata_map`` and needs nothing else.

Graph signature (``schema_version`` 1), all float32, batch dimension dynamic:

========== =============== ==========================================================
input      shape           meaning
========== =============== ==========================================================
x          [B, 1 + E]      scaled value and extras observed at the closed interval t
h, c       [B, S]          LSTM state before the step, layers concatenated (S = L*U)
calendar   [B, H, C]       calendar rows of target intervals t+1..t+H (only if C > 0)
========== =============== ==========================================================

========== =============== ==========================================================
output     shape           meaning
========== =============== ==========================================================
h_out      [B, S]          state after consuming x (the H-step rollout does not touch it)
c_out      [B, S]
forecast   [B, H]          scaled forecasts of t+1..t+H (recursive rollout in-graph)
========== =============== ==========================================================

Lifecycle of a key, identical online and offline: state starts at zero; the first
``window`` intervals are buffered (warm-up); when the window is full, a key the model
never saw gets its value scaling from that window, the buffered intervals are stepped in
order, and the step at the window's last interval yields the key's first forecast. From
then on each closed interval is one step and one forecast. Gaps of up to ``gap.max_gap``
missing intervals are filled by linear interpolation and stepped (no forecast is emitted
for imputed intervals); a longer gap resets the key to warm-up (known keys keep their
training scale).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamcast.core.features import CalendarName, ExtraScaling, FeatureSpec, ValueScaling
from streamcast.core.validation import problems

METADATA_KEY = "streamcast"
SCHEMA_VERSION = 1

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


class ScalingMeta(_Frozen):
    """Value scaling per key (training stats, or the warm-up window) and global extras."""

    scheme: Literal["standard"] = "standard"
    unseen_keys: Literal["warmup_window"] = "warmup_window"
    known: dict[str, tuple[float, float]] = Field(default_factory=dict)
    extra_loc: tuple[float, ...] = ()
    extra_scale: tuple[float, ...] = ()


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
    (``(value - loc) / scale`` with the key's value scaling, as the model sees them)
    with the training distribution, given by its quantiles ``input_quantiles`` at
    probabilities ``input_probs`` (:mod:`streamcast.core.drift`).
    """

    reference: str = ""
    #: per horizon step: mean, std and |p95| of scaled residuals (actual - forecast) / scale
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

    #: [B, 1 + E], [B, S], [B, S], [B, H, C] (empty without calendar features)
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


class TrainingMeta(_Frozen):
    """Where the model came from and how good it was."""

    data_fingerprint: str = ""
    data_source: str = ""
    n_keys: int = 0
    n_rows: int = 0
    seed: int = 0
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
    features: FeatureMeta = FeatureMeta()
    scaling: ScalingMeta = ScalingMeta()
    gap: GapMeta = GapMeta()
    calibration: CalibrationMeta = CalibrationMeta()
    drift: DriftMeta = DriftMeta()
    self_test: SelfTestMeta = SelfTestMeta()
    training: TrainingMeta = TrainingMeta()

    def feature_spec(self) -> FeatureSpec:
        """The shared feature description used by both halves."""
        return FeatureSpec(
            interval_s=self.interval_s,
            value_name=self.features.value_name,
            extra_names=self.features.extra_names,
            calendar=self.features.calendar,
            timezone=self.features.timezone,
        )

    def value_scaling(self) -> ValueScaling:
        """Per-key value scaling for the keys seen in training."""
        return ValueScaling(known=dict(self.scaling.known))

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
        try:
            meta = cls.model_validate_json(raw)
        except ValidationError as exc:
            # pydantic's own text spans lines and links to its docs: one line per field
            raise ValueError("; ".join(problems(exc))) from None
        if meta.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"model metadata schema {meta.schema_version} is not supported "
                f"(this streamcast reads schema {SCHEMA_VERSION})"
            )
        return meta
