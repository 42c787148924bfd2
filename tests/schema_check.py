"""A check of JSON documents against the repository's JSON Schemas (olive_fp16_pass/schemas/), with no dependency:
jsonschema is used when installed, else the handful of keywords the schemas use."""

from __future__ import annotations

import json
import re
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent.parent / "olive_fp16_pass" / "schemas"


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def schema_errors(instance, schema: dict, root: dict | None = None, where: str = "$") -> list[str]:
    """The JSON Schema keywords our report schemas use (type, const, enum, pattern, required, properties, items,
    additionalProperties, oneOf, $ref); jsonschema itself when it is installed."""
    root = root or schema
    if root is schema and where == "$":
        try:
            import jsonschema
        except ImportError:
            pass
        else:
            return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_errors(instance, target, root, where)
    errors = []
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "number": (int, float),
    }
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(instance, types[t]) and not (t == "number" and isinstance(instance, bool)) for t in allowed)
        if not ok:
            return [f"{where}: {type(instance).__name__} is not {allowed}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{where}: {instance!r} is not {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(instance, str) and not re.search(schema["pattern"], instance):
        errors.append(f"{where}: {instance!r} does not match {schema['pattern']}")
    if "oneOf" in schema:
        matches = [s for s in schema["oneOf"] if not schema_errors(instance, s, root, where)]
        if len(matches) != 1:
            errors.append(f"{where}: matches {len(matches)} of oneOf")
    if isinstance(instance, dict):
        errors += [f"{where}: '{k}' is required" for k in schema.get("required", []) if k not in instance]
        for key, value in instance.items():
            if key in schema.get("properties", {}):
                errors += schema_errors(value, schema["properties"][key], root, f"{where}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(value, schema["additionalProperties"], root, f"{where}.{key}")
    if isinstance(instance, list) and "items" in schema:
        for k, item in enumerate(instance):
            errors += schema_errors(item, schema["items"], root, f"{where}[{k}]")
    return errors
