"""The stateful step model: the Protocol the pipeline needs and its ONNX Runtime form.

The graph signature is the one documented in :mod:`streamcast.core.artifact`:
``(x [B, 2+E+M], h [B, S], c [B, S], calendar [B, H, C]) -> (h_out, c_out, forecast [B, H])``,
all float32 with a dynamic batch dimension. One :class:`OnnxStepModel` call steps a whole
micro-batch of keys.

:func:`self_test_failures` reruns the sample the exporter embedded in the artifact and says
whether the loaded graph still computes what the exporter saw (the check before a
hot-swap).

:meth:`OnnxStepModel.advance` is the step without its rollout: rebuilding a key's state
from its window (after a hot-swap, or a restore under another model) needs ``h_out`` and
``c_out`` only, and ONNX Runtime runs every node of a graph whatever outputs are asked for,
so the rollout (most of a step's cost: ~55 ms of ~57 at 1,000 keys, window 48, H 24, 64
units) would be paid ``window`` times per key. A second session over the graph pruned to
the state outputs runs instead, used only when it reproduces the full graph's state bit for
bit on a probe batch.

``step`` is synchronous and CPU bound (milliseconds for a thousand keys); the service
calls it from a worker thread so the event loop stays responsive.

**Threads.** A model loaded with ``threads = N > 1`` runs a call's runs side by side on N
threads (the calling one and a shared pool), each run single-threaded in ONNX Runtime
(``Run`` on one session is thread-safe and releases the GIL). ONNX Runtime's own intra-op
threads split every node instead, and this graph is ~1,500 small ones (the step and its
unrolled rollout): with the hidden-64, window-48, horizon-24 model, 10,000 keys went from
191 ms in runs of 1,024 on one thread to 113 ms on two threads side by side, where two
intra-op threads made a run of 1,024 slower (``bench/micro.py`` row (d)). A key's outputs
do not depend on which run it is in (``test_model``), so the split changes no bit.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from streamcast.core.artifact import ModelMeta
from streamcast.core.features import Float32Array
from streamcast.core.onnx_passes import drop_noop_slices, split_gate_products
from streamcast.errors import ModelError


class StepModel(Protocol):
    """One batched LSTM step plus the in-graph H-step rollout."""

    @property
    def meta(self) -> ModelMeta:
        """The artifact's self-description."""
        ...

    @property
    def identity(self) -> int:
        """A fingerprint of the model's weights and metadata: the LSTM state a key holds is
        only meaningful to the model of the same identity."""
        ...

    def step(
        self,
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        """``(h_out [B, S], c_out [B, S], forecast [B, H])``; ``calendar`` is None iff C = 0."""
        ...


@runtime_checkable
class StateAdvancer(Protocol):
    """A :class:`StepModel` that can step the state alone, cheaper than :meth:`step`."""

    def advance(
        self,
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
    ) -> tuple[Float32Array, Float32Array]:
        """``(h_out, c_out)`` exactly as :meth:`StepModel.step` computes them."""
        ...


#: keys per ONNX Runtime run: a bigger batch is cut into runs of this many. The gate
#: matmuls of a run of ~1,000 keys stay in the CPU's caches; measured with the hidden-64,
#: horizon-24 model (``bench/micro.py`` row (d)), one run of 10,000 keys moves about half
#: the keys per second of ten runs of 1,024.
RUN_KEYS = 1024
#: a step is split across threads only into runs of at least this many keys, a state-only
#: advance (~20 times cheaper per key) into runs of at least ``MIN_SPLIT_KEYS_STATE``:
#: below that, waking a pool thread costs more than the run it takes over (measured with
#: the hidden-64 model: 500 keys, step 9.2 -> 8.0 ms on two threads, advance 0.44 -> 0.54)
MIN_SPLIT_KEYS = 128
MIN_SPLIT_KEYS_STATE = 1024

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads for side-by-side runs (shared by every
    model loaded with the same thread count: a swap does not start new threads)."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="ort-run")
        return pool


Feeds = dict[str, Float32Array]


def fingerprint(data: bytes) -> int:
    """A 63-bit fingerprint of bytes (never 0: 0 means "no model" in the state store)."""
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1
    return value or 1


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options tuned for small, latency-bound batched steps on shared cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn a core between micro-batches; the service shares its cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def open_session(
    path_or_bytes: str | Path | bytes, intra_op_threads: int = 1
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with :func:`session_options`: the one way every part of
    streamcast (service, export parity check, offline evaluator) opens a model, so all of
    them run the graph with the same settings (one thread by default: deterministic).

    Raises whatever ONNX Runtime raises for a missing or malformed model; callers turn that
    into their own error.
    """
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(
        source,
        sess_options=session_options(intra_op_threads),
        providers=["CPUExecutionProvider"],
    )


class OnnxStepModel:
    """A :class:`StepModel` backed by one ONNX Runtime ``InferenceSession``.

    Load with :meth:`load`; it validates the graph against the metadata and raises
    :class:`ModelError` with a clear message if anything does not match.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        meta: ModelMeta,
        path: Path,
        identity: int = 0,
        *,
        state_session: ort.InferenceSession | None = None,
        run_keys: int = RUN_KEYS,
        threads: int = 1,
    ) -> None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        self._session = session
        self.run_keys = run_keys
        #: threads a call's runs go side by side on (module docstring)
        self.threads = threads
        self._meta = meta
        self._identity = identity
        self.path = path
        names = meta.graph
        self._outputs = [names.h_out, names.c_out, names.forecast]
        self._calendar_name = names.calendar if meta.feature_spec().n_calendar > 0 else None
        self._state_session: ort.InferenceSession | None = None
        if state_session is not None and self._reproduces_state(state_session):
            self._state_session = state_session

    @property
    def meta(self) -> ModelMeta:
        """The artifact's self-description."""
        return self._meta

    @property
    def identity(self) -> int:
        """A 63-bit fingerprint of the artifact's bytes (weights and metadata)."""
        return self._identity

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> OnnxStepModel:
        """Open an exported artifact whose calls run on ``threads`` threads (module
        docstring); raises :class:`ModelError` if missing or incompatible."""
        file = Path(path)
        if not file.is_file():
            raise ModelError(f"model file {file} does not exist: check the model path setting")
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        try:
            data = file.read_bytes()
            session = open_session(data)
        except Exception as err:  # ORT raises many unrelated types
            raise ModelError(f"{file} is not a loadable ONNX model: {err}") from err
        props = dict(session.get_modelmeta().custom_metadata_map)
        try:
            meta = ModelMeta.from_metadata_map(props)
        except ValueError as err:
            raise ModelError(
                f"{file}: invalid streamcast metadata: {err}: export the model again with "
                "streamcast-train (or fix the exporter that wrote it)"
            ) from err
        validate_signature(session, meta, file)
        graph, session = lean_graph(data, session, meta)
        state = state_only_session(graph, meta)
        return cls(session, meta, file, fingerprint(data), state_session=state, threads=threads)

    def step(
        self,
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        """Run one batched step; see :class:`StepModel`. A batch of more than
        :attr:`run_keys` keys (:data:`RUN_KEYS`) is cut into equal runs of at most that
        many, and into one per thread where each gets :data:`MIN_SPLIT_KEYS`."""
        names = self._meta.graph
        feeds = {
            names.x: np.ascontiguousarray(x, dtype=np.float32),
            names.h: np.ascontiguousarray(h, dtype=np.float32),
            names.c: np.ascontiguousarray(c, dtype=np.float32),
        }
        if self._calendar_name is not None:
            if calendar is None:
                raise ValueError("this model needs calendar features")
            feeds[self._calendar_name] = np.ascontiguousarray(calendar, dtype=np.float32)
        h_out, c_out, forecast = self._run(self._session, self._outputs, feeds, MIN_SPLIT_KEYS)
        return h_out, c_out, forecast

    def _run(
        self, session: ort.InferenceSession, outputs: list[str], feeds: Feeds, min_split: int
    ) -> list[Float32Array]:
        """``session``'s ``outputs`` for ``feeds``, in runs side by side (:meth:`step`)."""
        n = len(next(iter(feeds.values())))
        runs = -(-n // self.run_keys)
        if self.threads > 1:
            runs = max(runs, min(self.threads, n // min_split))
        if runs <= 1:
            return list(session.run(outputs, feeds))
        bounds = np.linspace(0, n, runs + 1).round().astype(int).tolist()
        parts = [{k: v[lo:hi] for k, v in feeds.items()} for lo, hi in itertools.pairwise(bounds)]
        results = self._side_by_side(session, outputs, parts)
        return [np.concatenate(column) for column in zip(*results, strict=True)]

    def _side_by_side(
        self, session: ort.InferenceSession, outputs: list[str], parts: Sequence[Feeds]
    ) -> list[list[Float32Array]]:
        """Each part's outputs, in order: contiguous groups of parts, one per thread, the
        first group on the calling thread."""
        groups = [g.tolist() for g in np.array_split(np.arange(len(parts)), self.threads)]
        groups = [g for g in groups if g]

        def run(group: list[int]) -> list[list[Float32Array]]:
            return [list(session.run(outputs, parts[i])) for i in group]

        if len(groups) == 1:
            return run(groups[0])
        pool = _pool(self.threads - 1)
        others: list[Future[list[list[Float32Array]]]] = [pool.submit(run, g) for g in groups[1:]]
        mine = run(groups[0])
        return mine + [r for future in others for r in future.result()]

    def advance(
        self,
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
    ) -> tuple[Float32Array, Float32Array]:
        """``(h_out, c_out)`` of :meth:`step`, without the rollout where the pruned graph
        runs (module docstring)."""
        if self._state_session is None:
            h_out, c_out, _ = self.step(x, h, c, calendar)
            return h_out, c_out
        return self._advance(self._state_session, x, h, c, calendar)

    def _advance(
        self,
        session: ort.InferenceSession,
        x: Float32Array,
        h: Float32Array,
        c: Float32Array,
        calendar: Float32Array | None,
    ) -> tuple[Float32Array, Float32Array]:
        names = self._meta.graph
        feeds = {
            names.x: np.ascontiguousarray(x, dtype=np.float32),
            names.h: np.ascontiguousarray(h, dtype=np.float32),
            names.c: np.ascontiguousarray(c, dtype=np.float32),
        }
        if self._calendar_name is not None and calendar is not None:
            feeds[self._calendar_name] = np.ascontiguousarray(calendar, dtype=np.float32)
        wanted = {arg.name for arg in session.get_inputs()}
        outputs, kept = [names.h_out, names.c_out], {k: v for k, v in feeds.items() if k in wanted}
        h_out, c_out = self._run(session, outputs, kept, MIN_SPLIT_KEYS_STATE)
        return h_out, c_out

    def _reproduces_state(self, session: ort.InferenceSession) -> bool:
        """Whether the pruned ``session`` gives the full graph's state bit for bit on a
        probe batch (random inputs of the model's shapes, fixed seed)."""
        names = self._meta.graph
        feeds = probe_feeds(self._meta, 16)
        x, h, c = feeds[names.x], feeds[names.h], feeds[names.c]
        calendar = feeds.get(names.calendar) if names.calendar is not None else None
        try:
            pruned = self._advance(session, x, h, c, calendar)
        except Exception:  # noqa: BLE001 - ORT raises many unrelated types; step serves
            return False
        full = self.step(x, h, c, calendar)
        return all(np.array_equal(a, b) for a, b in zip(pruned, full[:2], strict=True))


def lean_graph(
    data: bytes, session: ort.InferenceSession, meta: ModelMeta
) -> tuple[bytes, ort.InferenceSession]:
    """The graph in ``data`` rewritten by :mod:`~streamcast.core.onnx_passes` (for
    artifacts exported before the exporter applied them) and a session over it; or
    ``data`` and ``session`` themselves when nothing is to rewrite, or when the rewritten
    graph does not give ``session``'s outputs bit for bit on probe batches of
    :data:`LEAN_PROBE_BATCHES` keys."""
    try:
        proto = onnx.load_model_from_string(data)
        if drop_noop_slices(proto) + split_gate_products(proto) == 0:
            return data, session
        lean = proto.SerializeToString()
        candidate = open_session(lean)
        same = all(
            np.array_equal(a, b)
            for feeds in (probe_feeds(meta, batch) for batch in LEAN_PROBE_BATCHES)
            for a, b in zip(candidate.run(None, feeds), session.run(None, feeds), strict=True)
        )
    except Exception:  # noqa: BLE001 - onnx and ORT raise many unrelated types; data serves
        return data, session
    return (lean, candidate) if same else (data, session)


#: the batch sizes :func:`lean_graph` compares a rewrite on: one key, an odd few, a full
#: run (matrix kernels take other paths for a row, a remainder, and whole panels)
LEAN_PROBE_BATCHES = (1, 37, RUN_KEYS)


def probe_feeds(meta: ModelMeta, batch: int) -> Feeds:
    """Random inputs of the model's shapes (fixed seed), by graph input name."""
    spec, names = meta.feature_spec(), meta.graph
    rng = np.random.default_rng(0)
    feeds = {
        name: rng.standard_normal((batch, n)).astype(np.float32)
        for name, n in ((names.x, meta.step_width), (names.h, meta.state_size),
                        (names.c, meta.state_size))
    }  # fmt: skip
    if spec.n_calendar and names.calendar is not None:
        shape = (batch, meta.horizon, spec.n_calendar)
        feeds[names.calendar] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def state_only_session(data: bytes, meta: ModelMeta) -> ort.InferenceSession | None:
    """A session over the graph in ``data`` pruned to the state outputs (module
    docstring), or None when it cannot be cut out (the full graph serves then)."""
    names = meta.graph
    try:
        proto = onnx.load_model_from_string(data)
        inputs = [i.name for i in proto.graph.input]
        pruned = Extractor(proto).extract_model(inputs, [names.h_out, names.c_out])
        return open_session(pruned.SerializeToString())
    except Exception:  # noqa: BLE001 - onnx and ORT raise many unrelated types
        return None


def validate_signature(session: ort.InferenceSession, meta: ModelMeta, file: Path) -> None:
    """Check the graph's inputs and outputs against the metadata (names, ranks, sizes)."""
    spec = meta.feature_spec()
    names = meta.graph
    want_in: dict[str, tuple[int, ...]] = {
        names.x: (meta.step_width,),
        names.h: (meta.state_size,),
        names.c: (meta.state_size,),
    }
    if spec.n_calendar > 0:
        if names.calendar is None:
            raise ModelError(f"{file}: metadata has calendar features but no calendar input name")
        want_in[names.calendar] = (meta.horizon, spec.n_calendar)
    want_out: dict[str, tuple[int, ...]] = {
        names.h_out: (meta.state_size,),
        names.c_out: (meta.state_size,),
        names.forecast: (meta.horizon,),
    }
    _check_args(file, "input", {a.name: a for a in session.get_inputs()}, want_in)
    _check_args(file, "output", {a.name: a for a in session.get_outputs()}, want_out)


def _check_args(
    file: Path, kind: str, have: dict[str, ort.NodeArg], want: Mapping[str, tuple[int, ...]]
) -> None:
    missing = sorted(set(want) - set(have))
    if missing:
        raise ModelError(
            f"{file}: graph {kind}s {sorted(have)} lack {missing} named in the metadata"
        )
    if kind == "input" and set(have) - set(want):
        raise ModelError(f"{file}: unexpected graph inputs {sorted(set(have) - set(want))}")
    for name, tail in want.items():
        arg = have[name]
        if arg.type != "tensor(float)":
            raise ModelError(f"{file}: {kind} '{name}' is {arg.type}, expected tensor(float)")
        shape = list(arg.shape)
        if len(shape) != 1 + len(tail):
            raise ModelError(
                f"{file}: {kind} '{name}' has shape {shape}, expected [batch, *{list(tail)}]"
            )
        for got, expected in zip(shape[1:], tail, strict=True):
            if isinstance(got, int) and got != expected:
                raise ModelError(
                    f"{file}: {kind} '{name}' has shape {shape}, expected [batch, *{list(tail)}]"
                )
        if isinstance(shape[0], int) and shape[0] > 0:
            raise ModelError(f"{file}: {kind} '{name}' has a fixed batch size {shape[0]}")


def self_test_failures(model: StepModel) -> str | None:
    """Run the artifact's own self-test sample (:class:`~streamcast.core.artifact.SelfTestMeta`)
    through ``model``: None when it reproduces the exporter's outputs within ``atol`` (or
    when the artifact carries no sample), else one line naming the largest difference.

    A model that loads and matches its signature can still be wrong: weights damaged in
    a way ONNX Runtime accepts, or the metadata of one model stapled to another graph.
    """
    sample = model.meta.self_test
    if not sample.x:
        return None
    calendar = np.asarray(sample.calendar, dtype=np.float32) if sample.calendar else None
    try:
        outputs = model.step(
            np.asarray(sample.x, dtype=np.float32),
            np.asarray(sample.h, dtype=np.float32),
            np.asarray(sample.c, dtype=np.float32),
            calendar,
        )
    except Exception as err:  # noqa: BLE001 - ORT raises many unrelated types
        # ORT's messages span lines (the node, the shapes): the refusal is one log line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"its self-test sample does not run: {first}"
    worst, where = 0.0, ""
    for name, got, want in zip(
        ("h_out", "c_out", "forecast"),
        outputs,
        (sample.h_out, sample.c_out, sample.forecast),
        strict=True,
    ):
        expected = np.asarray(want, dtype=np.float64)
        if got.shape != expected.shape:
            shapes = f"{list(got.shape)}, expected {list(expected.shape)}"
            return f"its self-test {name} has shape {shapes}"
        diff = float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0))
        if not diff <= worst:  # NaN counts as the worst
            worst, where = diff, name
    if not worst <= sample.atol:
        return (
            f"it does not reproduce its self-test sample: {where} differs by {worst:.3g} "
            f"(allowed {sample.atol:g}): the file is damaged or its metadata is another model's"
        )
    return None
