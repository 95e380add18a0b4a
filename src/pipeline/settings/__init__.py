"""One typed settings tree, read only from the environment.

``tree`` declares the sections and their fields (defaults, ranges, descriptions, secrets);
``loading`` reads them from defaults, a preset, ``.env`` and the process environment, and
records where each value came from. ``loading`` is the only module that reads ``os.environ``.
"""

from pipeline.settings.layers import preset_toml
from pipeline.settings.loading import Leaf, Loaded, leaves, load, provides, redact, unknown_error
from pipeline.settings.tree import (
    ALIASED_ENV,
    CLI_OPTIONS,
    DEFAULT_MISSING,
    ENV_PREFIX,
    LOADER_VARS,
    MAX_NAME_LENGTH,
    MODEL_NAME_RE,
    MODEL_NAME_RULE,
    MODEL_VERSION_RE,
    MODEL_VERSION_RULE,
    NESTED,
    SECRET_FIELDS,
    SECRET_PATHS,
    URI_PATHS,
    ColumnKind,
    DataSettings,
    FeatureSettings,
    GateSettings,
    ModelSettings,
    RunSettings,
    ServeSettings,
    Settings,
    Task,
    TrainSettings,
)

__all__ = [
    "ALIASED_ENV",
    "CLI_OPTIONS",
    "DEFAULT_MISSING",
    "ENV_PREFIX",
    "LOADER_VARS",
    "MAX_NAME_LENGTH",
    "MODEL_NAME_RE",
    "MODEL_NAME_RULE",
    "MODEL_VERSION_RE",
    "MODEL_VERSION_RULE",
    "NESTED",
    "SECRET_FIELDS",
    "SECRET_PATHS",
    "URI_PATHS",
    "ColumnKind",
    "DataSettings",
    "FeatureSettings",
    "GateSettings",
    "Leaf",
    "Loaded",
    "ModelSettings",
    "RunSettings",
    "ServeSettings",
    "Settings",
    "Task",
    "TrainSettings",
    "leaves",
    "load",
    "preset_toml",
    "provides",
    "redact",
    "unknown_error",
]
