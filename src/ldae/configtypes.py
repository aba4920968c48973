"""Give `--config` values their schema types before the workflow validates its config.

Snakemake parses a nested command-line value such as ``--config ldm='{lr: 1.0e-5, train: {max_epochs: 2}}'``
with YAML's BaseLoader: every leaf arrives as a string ('1.0e-5', '2'), which the schema then rejects. This walks
the config beside the JSON schema and converts a string leaf where the schema wants a number, an integer, a
boolean or null; typed values (those from config files) are left as they are. A string that does not convert
stays a string, so the schema's own error names the key.
"""

from __future__ import annotations

from typing import Any

_TRUE, _FALSE, _NULL = {"true", "yes", "on"}, {"false", "no", "off"}, {"null", "~", "none", ""}


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _scalar(text: str, types: list[str]) -> Any:
    """`text` as the first schema type it parses as; unchanged if none (or a string is allowed)."""
    if "string" in types:
        return text
    lowered = text.strip().lower()
    if "null" in types and lowered in _NULL:
        return None
    if "boolean" in types and lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    if "integer" in types:
        try:
            return int(text)
        except ValueError:
            pass
        try:  # '1e3' -> 1000, but never 2.5 -> 2
            number = float(text)
            if number.is_integer():
                return int(number)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def typed(value: Any, schema: dict) -> Any:
    """`value` with string leaves converted to the types `schema` asks for (recursively)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, str):
        return _scalar(value, _types(schema))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = typed(item, sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [typed(item, schema["items"]) for item in value]
    return value


def apply(config: dict, schema_path: str) -> dict:
    """Convert `config` in place (Snakemake's global config object) following the YAML schema file."""
    import yaml

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    typed(config, schema)
    return config
