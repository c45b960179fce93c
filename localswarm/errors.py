"""The exception tree. Transport errors are translated into these at the boundary."""

from __future__ import annotations


class LocalSwarmError(Exception):
    """Base class of every error localswarm raises on purpose."""


class ConfigError(LocalSwarmError):
    """The configuration (file, environment or flags) is invalid."""


class BackendNotFound(LocalSwarmError):
    """No inference server binary (llama-server, mlx_lm.server) could be found."""


class ModelNotFound(LocalSwarmError):
    """The requested model is neither local, cached nor downloadable."""


class DownloadError(LocalSwarmError):
    """A download failed, was refused (checksum) or the network is unreachable."""


class PlanError(LocalSwarmError):
    """No model/quantization/instance count fits the memory budget."""
