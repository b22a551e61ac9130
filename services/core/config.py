"""Task configuration: the prompt-variant options of the paper, as a validated set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

TASK_OPTIONS: dict[str, str] = {
    "c-persona-you": "classify: ask how *you* would answer",
    "c-persona-human": "classify: ask how *a human* would answer",
    "c-no-redacted": "classify: drop the sentence saying the paragraph can contain masked words",
    "m-removed": "mask token [REMOVED] instead of [REDACTED]",
    "i-persona-you": "answerable: ask whether *you* are able to answer",
    "i-persona-human": "answerable: ask whether *a human* is able to answer",
    "i-options": "answerable: list the possible answers",
    "e-persona-you": "explanation: for *you*",
    "e-persona-human": "explanation: for *a human*",
    "e-implcit-target": "counterfactual: do not name the target (spelled as in the paper)",
    "e-short": "redacted: the shorter redaction prompt",
}

_EXCLUSIVE = (
    ("c-persona-you", "c-persona-human"),
    ("i-persona-you", "i-persona-human"),
    ("e-persona-you", "e-persona-human"),
)


class InvalidTaskConfig(ValueError):
    """A task config names an unknown option or two options that exclude each other."""


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """The set of prompt options of one experiment (empty is the paper's default prompt)."""

    options: frozenset[str] = frozenset()

    EMPTY: ClassVar[TaskConfig]

    @classmethod
    def of(cls, options: Iterable[str] = ()) -> TaskConfig:
        chosen = frozenset(options)
        unknown = sorted(chosen - TASK_OPTIONS.keys())
        if unknown:
            raise InvalidTaskConfig(
                f"unknown task option {', '.join(map(repr, unknown))}; known: {', '.join(TASK_OPTIONS)}"
            )
        for first, second in _EXCLUSIVE:
            if first in chosen and second in chosen:
                raise InvalidTaskConfig(f"options {first!r} and {second!r} exclude each other")
        return cls(chosen)

    def __contains__(self, option: object) -> bool:
        return option in self.options

    def sorted(self) -> list[str]:
        return sorted(self.options)

    @property
    def mask_token(self) -> str:
        return "[REMOVED]" if "m-removed" in self.options else "[REDACTED]"

    @property
    def mask_word(self) -> str:
        return "removed" if "m-removed" in self.options else "redacted"

    def persona(self, prefix: str) -> str | None:
        """'you', 'human' or None for the persona option family `prefix` ('c', 'i' or 'e')."""
        if f"{prefix}-persona-you" in self.options:
            return "you"
        if f"{prefix}-persona-human" in self.options:
            return "human"
        return None


TaskConfig.EMPTY = TaskConfig()
