"""Resolve a `--model` argument: a paper shorthand or Hugging Face id, or a local
`tokenizer_config.json` whose Jinja `chat_template` renders the conversation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .core.chat import PAPER_SYSTEM_MESSAGE, ChatFormat, SystemMessage, UnknownModel, jinja_format, resolve_model


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str  # what the experiment id calls it
    chat_format: ChatFormat
    default_system: SystemMessage


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
        return ResolvedModel(name, jinja_format(name, config), SystemMessage("none"))
    model = resolve_model(argument)
    return ResolvedModel(model.shorthand, model.format, PAPER_SYSTEM_MESSAGE[model.format.name])
