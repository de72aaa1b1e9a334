"""Where things are: the repository and the binaries under test."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / "e2e"
KAFKA_SCRIPTS = E2E / "kafka"


def fjord_bin_path():
    """$FJORD_BIN or target/release/fjord (not checked)."""
    return os.environ.get("FJORD_BIN") or str(REPO / "target" / "release" / "fjord")


def fjord_bin_problem(binary):
    """None if `binary` is an executable file, else the message that says how to get one."""
    if Path(binary).is_file() and os.access(binary, os.X_OK):
        return None
    return f"fjord binary {binary} not found: build it with `cargo build --release -p fjord` or set FJORD_BIN"


def operator_bin():
    """The binary the `fjord/operator` image runs: $FJORD_OPERATOR_BIN or target/release/fjord-operator
    (a test module sets KUBE_IMAGES = {"fjord/operator": operator_bin()})."""
    return os.environ.get("FJORD_OPERATOR_BIN") or str(REPO / "target" / "release" / "fjord-operator")


def segment_files(directory, pattern="*.log"):
    """{path: size} of the segment files matching `pattern` under `directory` (`*.log`: not
    `*.log.deleted`, `*.cleaned` or `*.swap`); a file removed while listing is left out."""
    out = {}
    for p in Path(directory).glob(pattern):
        try:
            out[p] = p.stat().st_size
        except FileNotFoundError:
            pass
    return out
