{%- set spec = cookiecutter._spec -%}
{%- set input = spec.input -%}
{%- set output = spec.output -%}
"""Request and response models of the {{ spec.name }} service, generated from the notebook's sample.

One instance of a request is {{ input | describe_instance }} (app/kinds.py).
Validation is strict (no silent type coercion, no unknown fields) so that what reaches the model is
what the notebook's code was written for. app/convert.py turns the validated instances back into the
sample's type.
A request body is decoded and validated in one pass (``decode_request``: pydantic's JSON parser
straight to plain lists and dicts{{ "; a body of numbers only, straight to one float matrix" if input.kind == "ndarray" and input.json_type == "number" else "" }}).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, with_config
from typing_extensions import NotRequired, TypedDict
{%- if input.kind == "ndarray" and input.json_type == "number" %}

from app.convert import float_rows
{%- endif %}
{%- if input | has_datetimes %}
from pydantic import AwareDatetime, BeforeValidator, NaiveDatetime, Strict


def iso_string(value: Any) -> Any:
    """Date-times come as ISO 8601 strings only (pydantic would also take numbers as Unix times)."""
    if not isinstance(value, str):
        raise ValueError("Input should be an ISO 8601 date-time string")
    return value


# Strict(False): strict mode would refuse the ISO 8601 strings themselves.
NaiveIsoDatetime = Annotated[NaiveDatetime, Strict(False), BeforeValidator(iso_string)]
AwareIsoDatetime = Annotated[AwareDatetime, Strict(False), BeforeValidator(iso_string)]
{%- endif %}

{% if input.kind in ("dataframe", "records") %}
# One {{ "row" if input.kind == "dataframe" else "record" }}, keyed by the sample's own column names. A TypedDict, not a model: a request
# is validated straight from its JSON into plain dicts, with no object per row. Nullable fields accept
# null and may be left out, except those the code reads without a default (sent as null).
Instance = with_config(ConfigDict(extra="forbid", strict=True))(TypedDict("Instance", {
{%- for line in input.columns | typed_dict_fields %}
    {{ line }}
{%- endfor %}
}))
{% elif input.kind == "ndarray" %}
# One row of {{ input.width }} values{{ ", null for a missing value (NaN)" if input.nullable else "" }}.
Instance = Annotated[
    list[{{ input | input_annotation }}],
    Field(min_length={{ input.width }}, max_length={{ input.width }}),
]
{% else %}
Instance = {{ input | input_annotation }}
{% endif %}

class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(
        min_length=1,
        description="1 to {{ spec.max_instances }} instances; more are answered with 413.",
    )

{% if output.kind == "record" %}
class Prediction(BaseModel):
    """The prediction for one instance."""

    model_config = ConfigDict(protected_namespaces=())
{% for line in output.columns | model_fields("output") %}
    {{ line }}
{%- endfor %}
{% elif output.kind == "vector" %}
{%- if output.width %}
Prediction = Annotated[
    list[{{ output.json_type | output_annotation(output.nullable) }}],
    Field(min_length={{ output.width }}, max_length={{ output.width }}),
]
{%- else %}
Prediction = list[{{ output.json_type | output_annotation(output.nullable) }}]
{%- endif %}
{% else %}
Prediction = {{ output.json_type | output_annotation(output.nullable) }}
{% endif %}

class ModelInfo(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    predictions: list[Prediction] = Field(description="One prediction per instance, in order.")
    model: ModelInfo
    request_id: str = Field(description="The request's X-Request-ID header, or a new id; also sent as that header. POST /feedback takes it.")


{% if input.kind == "ndarray" and input.json_type == "number" -%}
def decode_request(body: bytes) -> Any:
    """The raw JSON body -> its validated instances: a float matrix where the body holds numbers only
    (app.convert.float_rows), else plain JSON values (the form app.convert expects).

    Raises pydantic.ValidationError naming each bad field.
    """
    rows = float_rows(body, {{ input.width }}{% if input.dtype | float_limit %}, limit={{ input.dtype | float_limit }}{% endif %})
    return rows if rows is not None else PredictRequest.model_validate_json(body).instances
{%- else -%}
def decode_request(body: bytes) -> list:
    """The raw JSON body -> its validated instances as plain JSON values (the form app.convert expects).

    Raises pydantic.ValidationError naming each bad field.
    """
    return PredictRequest.model_validate_json(body).instances
{%- endif %}
