"""Errors a user of the training tools can cause, under one root.

::

    TrainingError                 anything the CLI reports as ``error: <message>`` (exit != 0)
    ├── DataError                 the input data is unusable: unreadable file, missing column,
    │                             non-numeric value, unparsable timestamp, duplicate
    │                             timestamps, all-NaN or too-short series, empty file
    ├── ConfigError               the settings are impossible: unknown interval or
    │                             aggregation, horizon longer than the series allow,
    │                             split fractions that leave no training data
    └── ExportError               the ONNX export failed or its parity check against Keras
                                  did not hold

Every message is one line that names the problem, where it is (file, column, key, row,
timestamp) and what to do about it. Programming errors are not ``TrainingError``: they
should surface as tracebacks.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Root of every error a user of ``streamcast-train`` can cause."""


class DataError(TrainingError):
    """The input data cannot be used as it is."""


class ConfigError(TrainingError):
    """The requested settings are impossible for this data or in themselves."""


class ExportError(TrainingError):
    """Exporting the model to ONNX failed, or the exported graph disagrees with Keras."""
