"""App configuration: ``roost.toml`` / ``fly.toml`` text -> frozen records + warnings (pure).

Data flow::

    text --tomllib--> dicts --values.Table / sections--> AppConfig (model.py)
                                     |  problems by key path ("services.0.ports.1.handlers")
                                     v
                     locate.LineIndex: path -> line  ==>  ConfigError / ConfigWarning
                                                           "fly.toml:12: key: message"

``parse_config`` is pure (the CLI and API call it on uploaded text); ``load_config`` reads a
file first. Every error in a file is collected into one ``ConfigError`` (``.errors`` lists
them); unknown keys and fly keys Roost ignores are warnings. Nothing starts from an invalid
config. The records in ``model`` are stored in the catalog and read by the scheduler, the
host agent and the edge.
"""

from roost.config.model import (
    VM,
    AppConfig,
    Check,
    Concurrency,
    Mount,
    Restart,
    Service,
    ServicePort,
)
from roost.config.reader import (
    ConfigError,
    ConfigWarning,
    ParsedConfig,
    load_config,
    parse_config,
)

__all__ = [
    "VM",
    "AppConfig",
    "Check",
    "Concurrency",
    "ConfigError",
    "ConfigWarning",
    "Mount",
    "ParsedConfig",
    "Restart",
    "Service",
    "ServicePort",
    "load_config",
    "parse_config",
]
