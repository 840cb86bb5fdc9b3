"""Result files: versioned JSON (store), read back as a typed ``Result`` (model)."""

from .build import build_result
from .model import (
    Buffers,
    CacheRow,
    Checkpoint,
    HostInfo,
    KernelShare,
    Metadata,
    OfoHeld,
    PerConnection,
    Result,
    Stat,
    Timeline,
)
from .store import (
    RESULT_FILE,
    SCHEMA,
    check_schema,
    load_result,
    new_run_dir,
    result_path,
    write_json_atomic,
)
from .transfers import Goodput, Transfer

__all__ = ["RESULT_FILE", "SCHEMA", "Buffers", "build_result", "CacheRow", "Checkpoint", "HostInfo",
           "KernelShare", "Metadata", "OfoHeld", "PerConnection", "Result", "Stat", "Timeline",
           "Goodput", "Transfer",
           "check_schema", "load_result", "new_run_dir", "result_path", "write_json_atomic"]
