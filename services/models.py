"""Resolve a `--model` argument: a paper shorthand or Hugging Face id, or a local
`tokenizer_config.json` whose Jinja `chat_template` renders the conversation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .core.chat import PAPER_SYSTEM_MESSAGE, ChatFormat, SystemMessage, UnknownModel, jinja_format, resolve_model

# The tokenizer_config.json entries a chat template needs; they travel in messages.
TEMPLATE_KEYS = ("chat_template", "bos_token", "eos_token")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # what the experiment id calls it
    chat_format: ChatFormat
    default_system: SystemMessage
    template: dict[str, Any] | None = None  # a local model's template entries, else None


def load_model(argument: str) -> ResolvedModel:
    path = Path(argument)
    if path.suffix == ".json" or path.is_dir():
        config_path = path / "tokenizer_config.json" if path.is_dir() else path
        if not config_path.is_file():
            raise UnknownModel(f"no tokenizer_config.json at {config_path}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise UnknownModel(f"cannot read {config_path}: {error}") from None
        name = config_path.parent.name or "local-model"
        template = {key: config[key] for key in TEMPLATE_KEYS if key in config}
        return ResolvedModel(name, jinja_format(name, template), SystemMessage("none"), template)
    model = resolve_model(argument)
    return ResolvedModel(model.shorthand, model.format, PAPER_SYSTEM_MESSAGE[model.format.name])


def model_name(argument: str) -> str:
    """The name messages carry for a `--model` argument, without reading a file: a known
    model's shorthand, else the folder name of a local tokenizer_config.json."""
    try:
        return resolve_model(argument).shorthand
    except UnknownModel:
        path = Path(argument)
        return (path.parent if path.suffix == ".json" else path).name or argument


def chat_format_of(model: str, template: Mapping[str, Any] | None) -> ChatFormat:
    """The chat format a message names: a local model's template, else a known model's."""
    if template is not None:
        return _jinja_format_cached(model, json.dumps(template, sort_keys=True))
    return resolve_model(model).format


@lru_cache(maxsize=64)
def _jinja_format_cached(model: str, template_json: str) -> ChatFormat:
    return jinja_format(model, json.loads(template_json))
