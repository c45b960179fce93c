"""What the gateway accepts: one description of every request body (issue 17).

These pydantic models are the only place where a valid request is defined. Validation
(:mod:`localswarm.gateway.validation`) runs them, and ``/openapi.json``
(:mod:`localswarm.gateway.openapi`) is generated from them, so the two cannot drift apart.

Sources for the rules: OpenAI's API reference (chat, completions, embeddings) and what
llama-server itself refuses (llama.cpp ``tools/server/server-common.cpp``
``oaicompat_chat_params_parse``, ``common/chat.cpp`` ``common_chat_msgs_parse_oaicompat``
and ``common_chat_tools_parse_oaicompat``, ``tools/server/server-schema.cpp``): a request
that would make an instance fail is refused here, with a 400 naming the parameter, before
any instance spends a slot on it.

Types are strict (``"1"`` is not an integer, ``true`` is not a number); ``null`` means
"absent" for every optional field, as in OpenAI's API. Unknown fields are accepted (clients
send ``store``, ``metadata``...): :mod:`localswarm.gateway.params` decides what is forwarded.
Rules between fields (a named ``tool_choice`` must be among ``tools``...) are
``model_validator``\\ s, raised as :class:`FieldError` so they too name the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

INT32_MAX = 2**31 - 1
MAX_STOP = 16  # OpenAI documents 4; llama-server takes more, and clients written for it send more
MAX_PROMPTS = 32
MAX_INPUTS = 2048
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


class FieldError(ValueError):
    """A rule between fields failed; ``param`` is the offending parameter's path."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


class _Object(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


def _int(lo: int, hi: int, description: str | None = None) -> Any:
    return Annotated[int, Field(ge=lo, le=hi, description=description)]


def _num(lo: float, hi: float, description: str | None = None) -> Any:
    return Annotated[float, Field(ge=lo, le=hi, description=description, allow_inf_nan=False)]


Number = Annotated[float, Field(allow_inf_nan=False)]
Int32 = _int(-(2**31), INT32_MAX)
Count32 = _int(0, INT32_MAX)
NonEmptyStr = Annotated[str, Field(min_length=1)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
JSONObject = dict[str, Any]


# discriminator function name -> (the field that picks the member, the values it may take)
TAGGED: dict[str, tuple[str, str]] = {}


def _tagged(field: str, prefix: str, tags: dict[str, Any]) -> Any:
    """A union chosen by the value of ``field`` (``role``, ``type``): one clear error when it is wrong.

    The tags carry a prefix so that pydantic's error locations never look like a key of the body.
    """

    def pick(value: Any) -> str | None:
        tag = value.get(field) if isinstance(value, dict) else None
        return f"{prefix}{tag}" if isinstance(tag, str) and tag in tags else None

    pick.__name__ = pick.__qualname__ = f"{prefix.rstrip(':')}_tag"
    TAGGED[pick.__name__] = (field, ", ".join(repr(t) for t in tags))
    members = tuple(Annotated[model, Tag(f"{prefix}{tag}")] for tag, model in tags.items())
    return Annotated[Union[members], Discriminator(pick)]  # type: ignore[valid-type]


# --- content parts ------------------------------------------------------------------


class TextPart(_Object):
    type: Literal["text"]
    text: str


class InputTextPart(_Object):
    type: Literal["input_text"]
    text: str


class RefusalPart(_Object):
    type: Literal["refusal"]
    refusal: str


class ImageURL(_Object):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Object):
    """Well-formed, but refused with 400 ``unsupported_content``: the swarm's models read text only."""

    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Object):
    data: str
    format: str


class AudioPart(_Object):
    """Well-formed, but refused with 400 ``unsupported_content``."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(_Object):
    """Well-formed, but refused with 400 ``unsupported_content``."""

    type: Literal["file"]
    file: JSONObject


ContentPart = _tagged("type", "part:", {
    "text": TextPart, "input_text": InputTextPart, "refusal": RefusalPart,
    "image_url": ImagePart, "input_audio": AudioPart, "file": FilePart,
})
Content = Union[str, Annotated[list[ContentPart], Field(description="Text parts are joined into one string.")]]


# --- messages -----------------------------------------------------------------------


class FunctionCall(_Object):
    name: NonEmptyStr
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(_Object):
    id: str | None = None
    type: Literal["function"]
    function: FunctionCall


class SystemMessage(_Object):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Object):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Object):
    role: Literal["assistant"]
    content: Content | None = Field(None, description="Required unless tool_calls (or function_call) is given.")
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    reasoning_content: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if "content" not in self.model_fields_set and self.tool_calls is None and self.function_call is None:
            raise FieldError("content", "An assistant message needs 'content' or 'tool_calls'.",
                             "missing_required_parameter")
        return self


class ToolMessage(_Object):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


class FunctionMessage(_Object):
    role: Literal["function"]
    content: str | None
    name: str


Message = _tagged("role", "role:", {
    "system": SystemMessage, "developer": SystemMessage, "user": UserMessage, "assistant": AssistantMessage,
    "tool": ToolMessage, "function": FunctionMessage,
})


# --- tools, tool_choice, response_format ---------------------------------------------


class FunctionDefinition(_Object):
    name: Name
    description: str | None = None
    parameters: JSONObject | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = None


class Tool(_Object):
    type: Literal["function"]
    function: FunctionDefinition


class ChosenFunction(_Object):
    name: NonEmptyStr


class NamedToolChoice(_Object):
    type: Literal["function"]
    function: ChosenFunction


ToolChoice = Union[Literal["none", "auto", "required"],
                   Annotated[NamedToolChoice, Field(description="The named function must be among `tools`.")]]


class TextFormat(_Object):
    type: Literal["text"]


class JSONObjectFormat(_Object):
    type: Literal["json_object"]
    schema_: JSONObject | None = Field(None, alias="schema", description="llama-server extension.")


class JSONSchemaSpec(_Object):
    name: Name
    description: str | None = None
    schema_: JSONObject | None = Field(None, alias="schema")
    strict: bool | None = None


class JSONSchemaFormat(_Object):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = _tagged("type", "format:", {
    "text": TextFormat, "json_object": JSONObjectFormat, "json_schema": JSONSchemaFormat,
})


class StreamOptions(_Object):
    include_usage: bool | None = None


# --- the requests -------------------------------------------------------------------


class _Sampling(_Object):
    """Fields shared by chat and legacy completions, and llama-server's own extensions."""

    model: str | None = Field(None, description="Any name: every model id resolves to the swarm.")
    max_tokens: _int(1, 10_000_000) | None = None
    temperature: _num(0, 2, "Default: the swarm's `temperature` setting (diversity for the vote).") | None = None
    top_p: _num(0, 1) | None = None
    stop: Union[str, Annotated[list[str], Field(max_length=MAX_STOP)], None] = Field(
        None, description=f"Up to {MAX_STOP} sequences where generation stops.")
    seed: _int(-(2**63), 2**64, "Instance i samples with seed + i.") | None = None
    presence_penalty: _num(-2, 2) | None = None
    frequency_penalty: _num(-2, 2) | None = None
    logit_bias: dict[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], _num(-100, 100)] | None = Field(
        None, description="Token ids (strings of digits) to biases in [-100, 100].")
    n: _int(1, 128, "Choices: the voted answer first, then other instances' samples.") | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = Field(None, description="Only with `stream: true`.")
    user: str | None = None
    # llama-server extensions (server-schema.cpp), forwarded as they are
    ignore_eos: bool | None = None
    top_k: Count32 | None = None
    min_p: _num(0, 1) | None = None
    typical_p: Number | None = None
    top_n_sigma: Number | None = None
    repeat_penalty: Number | None = None
    repeat_last_n: Count32 | None = None
    penalize_nl: bool | None = None
    mirostat: _int(0, 2) | None = None
    mirostat_tau: Number | None = None
    mirostat_eta: Number | None = None
    dynatemp_range: Number | None = None
    dynatemp_exponent: Number | None = None
    xtc_probability: _num(0, 1) | None = None
    xtc_threshold: _num(0, 1) | None = None
    dry_multiplier: Number | None = None
    dry_base: Number | None = None
    dry_allowed_length: Count32 | None = None
    dry_penalty_last_n: Count32 | None = None
    dry_sequence_breakers: Annotated[list[str], Field(min_length=1)] | None = None
    samplers: Union[str, list[str], None] = None
    grammar: str | None = None
    json_schema: JSONObject | None = None
    min_keep: Count32 | None = None
    n_keep: _int(-1, INT32_MAX) | None = None
    n_indent: Count32 | None = None
    t_max_predict_ms: _int(-1, 2**63 - 1) | None = None
    cache_prompt: bool | None = None

    @model_validator(mode="after")
    def _stream_and_grammar(self) -> _Sampling:
        if self.stream_options is not None and not self.stream:
            raise FieldError("stream_options", "'stream_options' is only allowed when 'stream' is true.")
        if self.grammar and self.json_schema is not None:
            raise FieldError("grammar", "'grammar' and 'json_schema' cannot be used together.")
        return self


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: _int(1, 10_000_000) | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: _int(0, 20) | None = None
    reasoning_effort: str | None = None
    # llama-server chat extensions
    chat_template_kwargs: JSONObject | None = None
    reasoning_format: Literal["none", "auto", "deepseek", "deepseek-legacy"] | None = None
    add_generation_prompt: bool | None = None
    enable_thinking: bool | None = None
    thinking_budget_tokens: _int(-1, INT32_MAX) | None = None

    @model_validator(mode="after")
    def _tools_rules(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise FieldError("tool_choice.function.name",
                             f"'tool_choice' names the function {choice.function.name!r}, which is not among 'tools'.")
        if choice == "required" and not names:
            raise FieldError("tool_choice", "'tool_choice' is 'required' but no 'tools' are given.")
        if self.logprobs and names:
            # the gateway streams from its instances, and llama-server refuses logprobs with tools + stream
            raise FieldError("logprobs", "'logprobs' cannot be combined with 'tools' on this swarm.")
        if self.grammar and names and choice != "none":
            raise FieldError("grammar", "'grammar' cannot be combined with 'tools'.")
        return self


Tokens = Annotated[list[Count32], Field(min_length=1)]
# discriminator function name -> what the value may be (for the error message)
SHAPES: dict[str, str] = {}


def _prompts(name: str, text: Any, limit: int) -> Any:
    """A string, an array of token ids, or an array of up to ``limit`` of those, told apart by shape."""

    def shape(value: Any) -> str | None:
        if isinstance(value, str):
            return "text"
        if isinstance(value, list):
            first = value[0] if value else None
            return "tokens" if isinstance(first, int) and not isinstance(first, bool) else "many"
        return None

    shape.__name__ = shape.__qualname__ = f"{name}_shape"
    SHAPES[shape.__name__] = "a string, an array of token ids, or an array of strings or token-id arrays"
    many = Annotated[list[Union[text, Tokens]], Field(min_length=1, max_length=limit)]
    members = Union[Annotated[text, Tag("text")], Annotated[Tokens, Tag("tokens")], Annotated[many, Tag("many")]]
    return Annotated[members,  # type: ignore[valid-type]
                     Discriminator(shape),
                     Field(description=f"A string, token ids, or an array of up to {limit} of them.")]


class CompletionRequest(_Sampling):
    prompt: _prompts("prompt", str, MAX_PROMPTS)
    echo: bool | None = None
    suffix: str | None = Field(None, description="Refused with 400 when set: llama-server does not take it.")
    logprobs: _int(0, 5) | None = None
    best_of: _int(1, 128, "Ignored: the vote already picks the best of the instances' samples.") | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.suffix is not None:
            raise FieldError("suffix", "'suffix' is not supported by this swarm's backend (llama-server).",
                             "unsupported_parameter")
        if self.best_of is not None and self.n is not None and self.best_of < self.n:
            raise FieldError("best_of", "'best_of' must be at least 'n'.")
        return self


class EmbeddingRequest(_Object):
    input: _prompts("input", NonEmptyStr, MAX_INPUTS)
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: _int(1, 65536) | None = None
    user: str | None = None


REQUESTS: dict[str, type[_Object]] = {
    "ChatCompletionRequest": ChatCompletionRequest,
    "CompletionRequest": CompletionRequest,
    "EmbeddingRequest": EmbeddingRequest,
}


# --- answers (described for /openapi.json; built by the routes) ------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Error(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: JSONObject
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    localswarm: JSONObject | None = Field(None, description="The vote: winner, votes, confidence, usage_total.")


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Health(BaseModel):
    status: str | None = None
    ready: int | None = None
    instances: int | None = None


RESPONSES: dict[str, type[BaseModel]] = {
    "Error": Error, "ChatCompletion": ChatCompletion, "TextCompletion": TextCompletion, "Model": Model,
    "ModelList": ModelList, "Health": Health,
}
