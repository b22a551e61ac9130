"""Chat templates, model shorthands and generation defaults.

The paper's three formats (Llama2, Falcon, Mistral) are rendered by hand, exactly as
`golden_templates.json` shows. Any other chat model renders from the Jinja
`chat_template` of its `tokenizer_config.json` (Llama 3, Qwen, Gemma, ...): the caller
reads the file, this module only sees the parsed dict.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A user message and the assistant's reply; a None reply is the one to generate,
    a partial reply is a prefix the generation continues."""

    user: str
    assistant: str | None = None


class SystemMessageNotSupported(ValueError):
    """The model's format has no place for a system message."""


class UnknownModel(ValueError):
    """A model shorthand, id or format that Introspect does not know."""


@dataclass(frozen=True, slots=True)
class SystemMessage:
    """'default' (the format's own), 'none', or a custom text."""

    kind: str = "default"
    text: str | None = None

    @classmethod
    def parse(cls, value: str) -> SystemMessage:
        """'default', 'none', or any other string as the custom message text."""
        if value in ("default", "none"):
            return cls(value)
        return cls("custom", value)

    @property
    def id_part(self) -> str:
        """How the experiment id names this choice (a custom text by a short digest)."""
        if self.kind != "custom":
            return self.kind
        return "custom-" + hashlib.sha256((self.text or "").encode()).hexdigest()[:8]


DEFAULT_SYSTEM = SystemMessage("default")
NO_SYSTEM = SystemMessage("none")

LLAMA2_DEFAULT_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible,"
    " while being safe. Your answers should not include any harmful, unethical, racist, sexist,"
    " toxic, dangerous, or illegal content. Please ensure that your responses are socially"
    " unbiased and positive in nature.\n\nIf a question does not make any sense, or is not"
    " factually coherent, explain why instead of answering something not correct. If you don't"
    " know the answer to a question, please don't share false information."
)
FALCON_DEFAULT_SYSTEM = (
    "The following is a conversation between a highly knowledgeable and intelligent AI assistant,"
    " called Falcon, and a human user, called User. In the following interactions, User and Falcon"
    " will converse in natural language, and Falcon will answer User's questions. Falcon was built"
    " to be respectful, polite and inclusive. Falcon was built by the Technology Innovation"
    " Institute in Abu Dhabi. Falcon will never decline to answer a question, and always attempts"
    " to give an answer that User would be satisfied with. It knows a lot, and always tells the"
    " truth. The conversation begins."
)


def _system_text(system: SystemMessage, default: str | None, format_name: str) -> str | None:
    match system.kind:
        case "none":
            return None
        case "default":
            return default
        case _:
            if default is None and format_name == "Mistral":
                raise SystemMessageNotSupported("The Mistral model does not support a system message")
            return system.text


def render_llama2(history: Sequence[ChatTurn], system: SystemMessage = DEFAULT_SYSTEM) -> str:
    system_text = _system_text(system, LLAMA2_DEFAULT_SYSTEM, "Llama2")
    rendered = []
    for i, turn in enumerate(history):
        user = turn.user
        if i == 0 and system_text is not None:
            user = f"<<SYS>>\n{system_text}\n<</SYS>>\n\n{user}"
        piece = f"<s>[INST] {user} [/INST]"
        if turn.assistant is not None:
            piece += f" {turn.assistant}"
            if i < len(history) - 1:
                piece += " </s>"
        rendered.append(piece)
    return "".join(rendered)


def render_falcon(history: Sequence[ChatTurn], system: SystemMessage = DEFAULT_SYSTEM) -> str:
    system_text = _system_text(system, FALCON_DEFAULT_SYSTEM, "Falcon")
    lines = [] if system_text is None else [system_text]
    for turn in history:
        lines.append(f"User: {turn.user}")
        lines.append("Falcon:" if turn.assistant is None else f"Falcon: {turn.assistant}")
    return "\n".join(lines)


def render_mistral(history: Sequence[ChatTurn], system: SystemMessage = DEFAULT_SYSTEM) -> str:
    _system_text(system, None, "Mistral")  # refuses a custom message
    rendered = ["<s>"]
    for i, turn in enumerate(history):
        rendered.append(f"[INST] {turn.user} [/INST]")
        if turn.assistant is not None:
            rendered.append(turn.assistant)
            if i < len(history) - 1:
                rendered.append("</s> ")
    return "".join(rendered)


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """How one family of models wants a conversation laid out, and where its answer stops."""

    name: str
    render: Callable[[Sequence[ChatTurn], SystemMessage], str]
    stop: tuple[str, ...]
    # A template that came with a model (a job's message carries it): it may be slow or
    # hostile, so it renders within limits (`_BoundedSandbox`) and off the event loop.
    from_model: bool = False


LLAMA2 = ChatFormat("Llama2", render_llama2, ("[INST]", "[/INST]", "<s>", "</s>"))
FALCON = ChatFormat("Falcon", render_falcon, ("User:", "Falcon:", "</s>"))
MISTRAL = ChatFormat("Mistral", render_mistral, ("[INST]", "[/INST]", "</s>"))
FORMATS: dict[str, ChatFormat] = {f.name: f for f in (LLAMA2, FALCON, MISTRAL)}


# -- any model with a Jinja chat template --

# Limits on rendering a model's template: real chat templates take a few hundred steps and
# make a few kilobytes; a template built to spin or to fill memory is refused, and the one
# request carrying it fails, instead of the gateway's CPU or memory.
TEMPLATE_MAX_STEPS = 1_000_000  # lines of the compiled template's Python run, loops included
TEMPLATE_MAX_CHARS = 1_000_000  # characters of output, and of any one string or list it builds


class TemplateOverLimit(TemplateError):
    """A chat template went past its limits on steps or size."""


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the operators and calls that can build one huge value
    (repetition, powers, %-formatting, str.format, padding filters) checked first."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and isinstance(right, int) and isinstance(left, (str, list, tuple)):
            _check_size(len(left) * right)
        if operator == "*" and isinstance(left, int) and isinstance(right, (str, list, tuple)):
            _check_size(len(right) * left)
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise TemplateOverLimit(f"exponent {right} is over the template limit of 64")
        if operator == "%" and isinstance(left, str):
            _check_widths(left, _PERCENT_WIDTHS)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)  # not None: `value` is a string's format method
        if wrapped is not None:
            _check_widths(value.__self__, _BRACE_WIDTHS)
        return wrapped


def _check_size(size: int) -> None:
    if size > TEMPLATE_MAX_CHARS:
        raise TemplateOverLimit(f"a value of {size} items is over the template limit of {TEMPLATE_MAX_CHARS}")


_PERCENT_WIDTHS = re.compile(r"%[#0\- +]*(\d*)(?:\.(\d*))?")  # %10.3f: width, precision
_BRACE_WIDTHS = re.compile(r"\{[^{}:]*:[^{}\d]*(\d*)(?:[^{}\d.]*\.(\d*))?")  # {:>10.3}


def _check_widths(format_string: str, fields: re.Pattern[str]) -> None:
    """Refuse a field width or precision that would build a string over the limit."""
    for numbers in fields.findall(format_string):
        for number in numbers:
            if number:
                _check_size(int(number) if len(number) < 20 else TEMPLATE_MAX_CHARS + 1)


def _padding(filter_: Callable[..., Any], width_at: int) -> Callable[..., Any]:
    """`filter_` with its width argument (position `width_at`, after the value) checked."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        width = args[width_at] if len(args) > width_at else kwargs.get("width")
        if isinstance(width, int):
            _check_size(width)
        return filter_(*args, **kwargs)

    return checked


_JINJA = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
for _name in ("center", "wordwrap"):
    _JINJA.filters[_name] = _padding(_JINJA.filters[_name], 2 if _name == "wordwrap" else 1)
_JINJA.filters["indent"] = _padding(_JINJA.filters["indent"], 1)
_format_filter = _JINJA.filters["format"]


def _checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_widths(str(value), _PERCENT_WIDTHS)
    return _format_filter(value, *args, **kwargs)


_JINJA.filters["format"] = _checked_format


def render_bounded(template: Any, **variables: Any) -> str:
    """`template.render(**variables)` within TEMPLATE_MAX_STEPS and TEMPLATE_MAX_CHARS.

    The steps are counted by a trace function on this thread while it renders: the lines
    Jinja's compiled Python runs, so a loop that makes no output is counted too. Whoever
    traced this thread before gets its tracer back afterwards; a coverage tool does not see
    what runs meanwhile (the limits' checks), which tests/core/test_template_limits.py and
    the gateway's handler tests exercise all the same."""
    steps = 0

    def count(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        if event == "line":
            steps += 1
            if steps > TEMPLATE_MAX_STEPS:
                raise TemplateOverLimit(f"the template ran over its limit of {TEMPLATE_MAX_STEPS} steps")
        return count

    before = sys.gettrace()
    sys.settrace(count)
    try:
        chunks, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > TEMPLATE_MAX_CHARS:
                raise TemplateOverLimit(f"the template made over {TEMPLATE_MAX_CHARS} characters")
            chunks.append(chunk)
        return "".join(chunks)
    finally:
        sys.settrace(before)


def _raise_exception(message: str) -> None:
    raise SystemMessageNotSupported(message) if "system" in message.lower() else TemplateError(message)


_JINJA.globals["raise_exception"] = _raise_exception


def jinja_format(name: str, tokenizer_config: Mapping[str, Any], default_system: str | None = None) -> ChatFormat:
    """A chat format from a parsed `tokenizer_config.json` that carries a `chat_template`."""
    template_source = tokenizer_config.get("chat_template")
    if isinstance(template_source, list):  # several named templates: take the default one
        named = {t.get("name"): t.get("template") for t in template_source if isinstance(t, dict)}
        template_source = named.get("default")
    if not isinstance(template_source, str):
        raise UnknownModel(f"{name}: tokenizer_config.json has no chat_template")
    try:
        template = _JINJA.from_string(template_source)
    except TemplateSyntaxError as error:
        raise UnknownModel(
            f"{name}: the chat_template is not valid Jinja: {error.message} (line {error.lineno})"
        ) from None
    special = {key: _token_text(tokenizer_config.get(key)) for key in ("bos_token", "eos_token")}

    def render(history: Sequence[ChatTurn], system: SystemMessage = DEFAULT_SYSTEM) -> str:
        system_text = {"none": None, "default": default_system}.get(system.kind, system.text)
        messages: list[dict[str, str]] = [] if system_text is None else [{"role": "system", "content": system_text}]
        for turn in history[:-1]:
            messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant or ""}]
        messages.append({"role": "user", "content": history[-1].user})
        prompt = render_bounded(template, messages=messages, add_generation_prompt=True, **special)
        return prompt + (history[-1].assistant or "")

    stop = tuple(s for s in (special["eos_token"],) if s)
    return ChatFormat(name, render, stop, from_model=True)


def _token_text(token: Any) -> str:
    if isinstance(token, dict):  # older configs store AddedToken objects
        return str(token.get("content", ""))
    return "" if token is None else str(token)


# -- models --


def render_checked(chat_format: ChatFormat, message: str, system: SystemMessage) -> str:
    """`chat_format.render` of one user message, its template's own failures (a refused
    system message aside) turned into UnknownModel, a mistake in the model given."""
    try:
        return chat_format.render([ChatTurn(message)], system)
    except SystemMessageNotSupported:
        raise
    except TemplateError as error:
        raise UnknownModel(f"{chat_format.name}: the chat_template failed to render: {error}") from None


@dataclass(frozen=True, slots=True)
class Model:
    shorthand: str
    repo_id: str
    format: ChatFormat


MODELS: dict[str, Model] = {
    m.shorthand: m
    for m in (
        Model("llama2-70b", "meta-llama/Llama-2-70b-chat-hf", LLAMA2),
        Model("llama2-13b", "meta-llama/Llama-2-13b-chat-hf", LLAMA2),
        Model("llama2-7b", "meta-llama/Llama-2-7b-chat-hf", LLAMA2),
        Model("falcon-40b", "tiiuae/falcon-40b-instruct", FALCON),
        Model("falcon-7b", "tiiuae/falcon-7b-instruct", FALCON),
        Model("mistral-v1-7b", "mistralai/Mistral-7B-Instruct-v0.1", MISTRAL),
        Model("mistral-v2-7b", "mistralai/Mistral-7B-Instruct-v0.2", MISTRAL),
    )
}

# How a served model id names each of the paper's template families.
_FAMILY_MARKS: dict[str, tuple[str, ...]] = {
    "Llama2": ("llama-2", "llama2"),
    "Falcon": ("falcon",),
    "Mistral": ("mistral",),
}


def template_mismatch(format_name: str, served_model_id: str) -> bool:
    """Whether a server reporting `served_model_id` plainly is not of the family whose chat
    template `format_name` is: a model asked in another model's format answers badly, and
    the results would say nothing about it. Formats read from a tokenizer_config are the
    model's own; the stand-in answers any format."""
    marks = _FAMILY_MARKS.get(format_name)
    served = served_model_id.lower()
    return marks is not None and "stand-in" not in served and not any(mark in served for mark in marks)


# The paper's default system message per model family: Llama2 and Mistral ran without one.
PAPER_SYSTEM_MESSAGE: dict[str, SystemMessage] = {"Llama2": NO_SYSTEM, "Falcon": DEFAULT_SYSTEM, "Mistral": NO_SYSTEM}


def resolve_model(name: str) -> Model:
    """A model by shorthand (llama2-7b) or by its Hugging Face id."""
    if name in MODELS:
        return MODELS[name]
    for model in MODELS.values():
        if model.repo_id.lower() == name.lower():
            return model
    raise UnknownModel(
        f"unknown model {name!r}; use one of {', '.join(MODELS)}, a Hugging Face id of those,"
        " or a local tokenizer_config.json with a chat_template"
    )


# -- generation --


@dataclass(frozen=True, slots=True)
class GenerationParameters:
    """The paper's sampling settings; `seed` is the experiment seed."""

    temperature: float = 0.1
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    top_k: int = 50
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = field(default=())
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
        }


def generation_defaults(chat_format: ChatFormat, seed: int = 0) -> GenerationParameters:
    return GenerationParameters(stop=chat_format.stop, seed=seed)


def clean_answer(generated: str, stop: Sequence[str]) -> str:
    """Remove one trailing stop sequence (TGI keeps it), then surrounding white space."""
    for sequence in stop:
        if sequence and generated.endswith(sequence):
            generated = generated[: -len(sequence)]
            break
    return generated.strip()
