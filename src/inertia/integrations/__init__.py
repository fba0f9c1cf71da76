"""Adapters for where people already train and read their runs (thin layers over :mod:`inertia.track`).

* :mod:`inertia.integrations.lightning`: ``InertiaCallback`` for PyTorch Lightning's ``Trainer``
  (needs ``pip install computational-inertia[lightning]``);
* :mod:`inertia.integrations.transformers`: ``InertiaCallback`` for the Hugging Face ``Trainer``
  (needs ``pip install computational-inertia[transformers]``);
* :mod:`inertia.integrations.loggers`: tracker sinks for any ``log_metrics(metrics, step)``
  logger, Weights & Biases and MLflow (``pip install computational-inertia[loggers]``).

Importing this package imports neither framework; each module imports its own.
"""

from inertia.integrations.loggers import LoggerSink, MLflowSink, WandbSink

__all__ = ["LoggerSink", "MLflowSink", "WandbSink"]
