"""gateway._core JSON schema: validation, error messages, drafts, local resources, cache."""

from __future__ import annotations

import json

import pytest

from gateway._core import JsonSchema, compile_schema

PERSON = json.dumps(
    {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "additionalProperties": False,
    }
)


def test_valid_and_invalid_instances():
    s = JsonSchema(PERSON)
    assert s.is_valid('{"name": "Ada", "tags": ["x"]}')
    assert s.is_valid(b'{"name": "Ada"}')
    assert not s.is_valid('{"tags": []}')
    assert not s.is_valid("{not json")
    assert s.errors('{"name": "Ada"}') == []


def test_error_messages_have_instance_paths():
    s = JsonSchema(PERSON)
    errors = s.errors('{"name": 1, "tags": ["ok", 2], "extra": true}')
    assert len(errors) == 3
    assert any(e.startswith("/name: ") and "string" in e for e in errors)
    assert any(e.startswith("/tags/1: ") for e in errors)
    assert any(e.startswith("/: ") and "extra" in e for e in errors)
    assert len(s.errors('{"name": 1, "tags": ["ok", 2], "extra": true}', limit=1)) == 1
    (bad,) = s.errors("[1, 2")
    assert "not valid JSON" in bad


def test_invalid_schema_raises_value_error():
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchema('{"type": "strin"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        JsonSchema("{")
    with pytest.raises(ValueError, match="unknown draft"):
        JsonSchema("{}", draft="3")
    with pytest.raises(TypeError):
        JsonSchema(42)


def test_draft_detection_and_override():
    tuple_schema = '{"items": [{"type": "integer"}], "additionalItems": false}'
    draft7 = JsonSchema('{"$schema": "http://json-schema.org/draft-07/schema#", ' + tuple_schema[1:])
    assert draft7.is_valid("[1]") and not draft7.is_valid("[1, 2]")
    assert not JsonSchema(tuple_schema, draft="7").is_valid("[1, 2]")
    # 2020-12 (the default) ignores additionalItems and expects a schema in `items`.
    assert JsonSchema('{"prefixItems": [{"type": "integer"}], "items": false}').is_valid("[1]")
    assert not JsonSchema('{"prefixItems": [{"type": "integer"}], "items": false}').is_valid("[1, 2]")


def test_remote_refs_only_from_resources():
    schema = '{"$ref": "https://example.com/name.json"}'
    with pytest.raises(ValueError, match="no network"):
        JsonSchema(schema)
    s = JsonSchema(schema, resources={"https://example.com/name.json": '{"type": "string", "minLength": 2}'})
    assert s.is_valid('"Ada"') and not s.is_valid('"A"')


def test_compile_schema_caches_and_validates():
    a = compile_schema(PERSON)
    b = compile_schema(PERSON.encode())
    assert a.is_valid('{"name": "x"}') and b.is_valid('{"name": "x"}')
    with pytest.raises(ValueError):
        compile_schema('{"minimum": "zero"}')
    with pytest.raises(ValueError):
        compile_schema('{"minimum": "zero"}')  # cached failures raise too
