"""/openapi.json tells the truth: the request lists exactly the sample's fields and types."""

JSON_SCHEMA_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}


def resolve(openapi: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def types_of(openapi: dict, schema: dict) -> set:
    """The JSON types a schema allows ("null" included), following $ref and anyOf."""
    schema = resolve(openapi, schema)
    if "anyOf" in schema:
        return set().union(*(types_of(openapi, option) for option in schema["anyOf"]))
    if "type" in schema:
        return {schema["type"]}
    if "enum" in schema:
        return {type(v).__name__ for v in schema["enum"]}
    return set()


def expected_types(json_type: str, nullable: bool) -> set:
    return {JSON_SCHEMA_TYPES[json_type]} | ({"null"} if nullable else set())


def operation(openapi: dict, path: str) -> dict:
    return openapi["paths"][path]["post"]


def test_predict_routes_are_documented(client, ship):
    openapi = client.get("/openapi.json").json()
    assert "/predict" in openapi["paths"]
    assert f"/v1/models/{{name}}:predict" in openapi["paths"]


def test_request_schema_lists_the_input(client, ship):
    openapi = client.get("/openapi.json").json()
    body = operation(openapi, "/predict")["requestBody"]["content"]["application/json"]["schema"]
    request = resolve(openapi, body)
    assert set(request["properties"]) == {"instances"}
    instances = request["properties"]["instances"]
    assert instances["type"] == "array" and instances["minItems"] == 1
    instance = resolve(openapi, instances["items"])
    spec = ship["input"]
    if spec["kind"] in ("dataframe", "records"):
        assert list(instance["properties"]) == [c["name"] for c in spec["columns"]]
        assert instance.get("additionalProperties") is False
        required = [c["name"] for c in spec["columns"] if not c["nullable"]]
        assert instance.get("required", []) == required
        for column in spec["columns"]:
            prop = instance["properties"][column["name"]]
            if column["dtype"] == "category":
                values = [v for option in prop.get("anyOf", [prop]) for v in option.get("enum", [])]
                assert values == column["categories"]
            elif column["dtype"].startswith("datetime64"):
                assert "string" in types_of(openapi, prop)
            else:
                assert types_of(openapi, prop) == expected_types(column["json_type"], column["nullable"])
    elif spec["kind"] == "ndarray":
        assert instance["type"] == "array"
        assert instance["minItems"] == instance["maxItems"] == spec["width"]
        assert types_of(openapi, instance["items"]) == expected_types(spec["json_type"], spec["nullable"])
    else:
        assert types_of(openapi, instance) == expected_types(spec["json_type"], spec["nullable"])


def test_response_schema_lists_predictions_and_model(client, ship):
    openapi = client.get("/openapi.json").json()
    response = operation(openapi, "/predict")["responses"]["200"]["content"]["application/json"]["schema"]
    body = resolve(openapi, response)
    # request_id: the X-Request-ID of the request (or a new id), in the body as in the header.
    assert set(body["properties"]) == {"predictions", "model", "request_id"}
    assert set(resolve(openapi, body["properties"]["model"])["properties"]) == {"name", "version"}
    prediction = resolve(openapi, body["properties"]["predictions"]["items"])
    output = ship["output"]
    if output["kind"] == "record":
        assert list(prediction["properties"]) == [c["name"] for c in output["columns"]]
    elif output["kind"] == "vector":
        assert prediction["type"] == "array"
    elif output["json_type"] != "any":
        assert JSON_SCHEMA_TYPES[output["json_type"]] in types_of(openapi, prediction)
