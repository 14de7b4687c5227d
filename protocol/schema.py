"""JSON Schema files of the protocol's messages, for platform teams (CPython only)."""

from __future__ import annotations

import json
from pathlib import Path

from .models import Answer, Batch, BatchV2, Status

SCHEMA_DIR = Path(__file__).parent / "schema"
MESSAGES = {"batch": Batch, "batch_v2": BatchV2, "answer": Answer, "status": Status}


def render_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, exactly as exported."""
    return {
        "%s.schema.json" % name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in MESSAGES.items()
    }


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write the schema files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
