"""The pipeline's YAML configuration: ``load`` it (``loader``), the frozen model it becomes
(``model``), and the masking of its secrets in output (``secrets``)."""

from coldtier.config.loader import CATALOG_TYPES, ENV_FILE_VAR, load, process_env, referenced_env
from coldtier.config.model import (
    CURSOR_MODES,
    READERS,
    SINK_FORMATS,
    AppConfig,
    BatchConfig,
    CursorConfig,
    LedgerConfig,
    MaintenanceConfig,
    MetricsConfig,
    RunConfig,
    SourceConfig,
    SparkSection,
    TableConfig,
    TargetConfig,
)
from coldtier.config.secrets import mask
from coldtier.errors import ConfigError

__all__ = ["CATALOG_TYPES", "CURSOR_MODES", "ENV_FILE_VAR", "READERS", "SINK_FORMATS", "AppConfig",
           "BatchConfig", "ConfigError", "CursorConfig", "LedgerConfig", "MaintenanceConfig", "MetricsConfig",
           "RunConfig", "SourceConfig", "SparkSection", "TableConfig", "TargetConfig", "load", "mask",
           "process_env", "referenced_env"]
