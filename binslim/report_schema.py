"""The JSON Schema (draft 2020-12) of the ``--json`` report, as ``binslim.report.REPORT_SCHEMA``; README.md
documents the same shape."""

from __future__ import annotations

from typing import Any

_NUMBER = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}


def build(schema_version: int) -> dict[str, Any]:
    """The schema of reports whose "schema" field is ``schema_version`` (report.SCHEMA_VERSION); report
    passes it in, so this module imports nothing of report's."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["schema", "binslim", "results"],
        "additionalProperties": False,
        "properties": {
            "schema": {"const": schema_version},
            "binslim": {"type": "string"},
            "summary": {  # only with -r
                "type": "object",
                "required": [
                    "files",
                    "elf",
                    "stripped",
                    "skipped",
                    "failed",
                    "not_elf",
                    "symlinks",
                    "special",
                    "bytes",
                    "packed",
                    "not_packed",
                    "dry_run",
                ],
                "additionalProperties": False,
                "properties": {
                    **{
                        name: _INT
                        for name in (
                            "files",
                            "elf",
                            "stripped",
                            "failed",
                            "not_elf",
                            "symlinks",
                            "special",
                            "packed",
                        )
                    },
                    "skipped": {"type": "object", "additionalProperties": _INT},
                    "not_packed": {"type": "object", "additionalProperties": _INT},
                    "bytes": {
                        "type": "object",
                        "required": ["before", "after", "saved"],
                        "additionalProperties": False,
                        "properties": {"before": _INT, "after": _INT, "saved": {"type": "integer"}},
                    },
                    "dry_run": {"type": "boolean"},
                },
            },
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "input",
                        "output",
                        "status",
                        "message",
                        "size",
                        "removed",
                        "overlay",
                        "upx",
                        "verify",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "input": {"type": "string"},
                        "output": {"type": "string"},
                        "status": {"enum": ["ok", "skipped", "failed"]},
                        "message": {"type": "string"},
                        "size": {
                            "type": "object",
                            "required": ["original", "stripped", "packed", "final"],
                            "additionalProperties": False,
                            "properties": {
                                "original": _INT,
                                "stripped": _INT,
                                "packed": {"anyOf": [_INT, {"type": "null"}]},
                                "final": _INT,
                            },
                        },
                        "removed": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "kind", "size"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "symbols",
                                            "debug",
                                            "notes",
                                            "other",
                                            "unused_segments",
                                            "headers",
                                        ]
                                    },
                                    "size": {"type": "integer"},
                                },
                            },
                        },
                        "overlay": _INT,
                        "upx": {
                            "anyOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["version", "method", "level", "seconds"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "version": {"type": "string"},
                                        "method": {"type": "string"},
                                        "level": {"type": "string"},
                                        "seconds": _NUMBER,
                                    },
                                },
                            ]
                        },
                        "verify": {
                            "anyOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": [
                                        "ran",
                                        "args",
                                        "same_behaviour",
                                        "original_varies",
                                        "reason",
                                        "warnings",
                                        "startup_ms",
                                        "peak_rss_kib",
                                    ],
                                    "additionalProperties": False,
                                    "properties": {
                                        "ran": {"type": "boolean"},
                                        "args": {"type": "array", "items": {"type": "string"}},
                                        "same_behaviour": {"type": ["boolean", "null"]},
                                        "original_varies": {"type": "boolean"},
                                        "reason": {"type": "string"},
                                        "warnings": {"type": "array", "items": {"type": "string"}},
                                        "startup_ms": {
                                            "anyOf": [
                                                {"type": "null"},
                                                {
                                                    "type": "object",
                                                    "required": [
                                                        "original",
                                                        "final",
                                                        "added",
                                                        "added_low",
                                                        "added_high",
                                                    ],
                                                    "additionalProperties": False,
                                                    "properties": {
                                                        "original": _NUMBER,
                                                        "final": _NUMBER,
                                                        "added": _NUMBER,
                                                        "added_low": {"anyOf": [_NUMBER, {"type": "null"}]},
                                                        "added_high": {"anyOf": [_NUMBER, {"type": "null"}]},
                                                    },
                                                },
                                            ]
                                        },
                                        "peak_rss_kib": {
                                            "anyOf": [
                                                {"type": "null"},
                                                {
                                                    "type": "object",
                                                    "required": ["original", "final"],
                                                    "properties": {"original": _INT, "final": _INT},
                                                },
                                            ]
                                        },
                                    },
                                },
                            ]
                        },
                    },
                },
            },
        },
    }
