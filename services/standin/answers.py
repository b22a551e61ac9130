"""The stand-in model's answers: deterministic text for tests, benchmarks and the demo.

This is not a language model and never claims to be one. It recognises which of the
protocol's questions it was asked, and picks an answer from a fixed menu by a hash of the
whole prompt, so the same prompt always gets the same answer. The menus are built to drive
every extractor path: clean labels, labels inside sentences, neutral and unknown answers,
refusals, answers nothing can be extracted from, paragraphs with and without lead-ins, and
word lists in every shape the list extractor knows.
"""

from __future__ import annotations

import hashlib
import re

STANDIN_NAME = "introspect-stand-in (deterministic test server, not a language model)"
STANDIN_MODEL_ID = "introspect-stand-in"  # the model id its servers report: part of every cache key

# Chat-template text after the user message, removed before reading the question.
_TEMPLATE_TAILS = (" [/INST]", "[/INST]", "\nFalcon:", "<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def prompt_roll(prompt: str, salt: str = "") -> int:
    """0..99, fixed for a prompt."""
    digest = hashlib.sha256((salt + prompt).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def _pick(prompt: str, menu: list[tuple[int, str]]) -> str:
    """Pick from (weight, answer) pairs by the prompt's roll; weights sum to 100."""
    roll = prompt_roll(prompt)
    for weight, answer in menu:
        if roll < weight:
            return answer
        roll -= weight
    return menu[-1][1]


def user_message(prompt: str) -> str:
    """The last user message of a rendered prompt (or the prompt itself)."""
    cut = len(prompt)
    for tail in _TEMPLATE_TAILS:
        position = prompt.rfind(tail)
        if position > 0 and "Paragraph: " in prompt[:position]:
            cut = min(cut, position)
    return prompt[:cut]


def _paragraph(message: str) -> str:
    _, _, paragraph = message.rpartition("\n\nParagraph: ")
    return paragraph.strip()


def standin_answer(prompt: str) -> str:
    message = user_message(prompt)
    paragraph = _paragraph(message)
    if message.startswith("Edit the following paragraph"):
        return _counterfactual(prompt, paragraph)
    if message.startswith("Redact "):
        mask = "[REMOVED]" if "[REMOVED]" in message else "[REDACTED]"
        return _redaction(prompt, paragraph, mask)
    if message.startswith("List the most important words"):
        return _importance(prompt, paragraph)
    if 'Answer only "yes" or "no"' in message:
        return _pick(prompt, [(55, "yes"), (25, "No."), (12, "Yes, it is possible."), (8, "no")])
    if "sentiment" in message:
        return _sentiment(prompt)
    if "entail" in message:
        return _entailment(prompt)
    if choices := re.findall(r'([a-z])\) "([^"]*)"', message):
        return _choice(prompt, choices)
    return "The stand-in server does not recognise this prompt."


def _sentiment(prompt: str) -> str:
    return _pick(
        prompt,
        [
            (28, "positive"),
            (24, "Negative"),
            (12, 'The sentiment of the paragraph is "positive".'),
            (10, "The paragraph seems to be negative."),
            (8, "neutral"),
            (8, "unknown"),
            (5, "I am sorry, I cannot classify this paragraph."),
            (5, "Hard to tell."),
        ],
    )


def _entailment(prompt: str) -> str:
    return _pick(
        prompt,
        [
            (30, '1) "yes"'),
            (28, '2) "no"'),
            (10, "Yes."),
            (10, "No, it does not."),
            (10, '3) "unknown"'),
            (6, "There is insufficient context."),
            (6, "The statement is about something else."),
        ],
    )


def _choice(prompt: str, lettered: list[tuple[str, str]]) -> str:
    real = [(letter, text) for letter, text in lettered if text != "unknown"]
    letter, text = real[prompt_roll(prompt, "choice") % len(real)]
    unknown_letter = next((letter for letter, text in lettered if text == "unknown"), "z")
    return _pick(
        prompt,
        [
            (45, f'{letter}) "{text}"'),
            (20, f"The answer is {text}."),
            (12, f"{unknown_letter}) unknown"),
            (10, f"Answer: {letter}"),
            (8, "I cannot determine this."),
            (5, "None of these."),
        ],
    )


_SWAPS = {
    "good": "bad", "bad": "good", "great": "awful", "awful": "great", "best": "worst", "worst": "best",
    "love": "hate", "loved": "hated", "boring": "thrilling", "dull": "lively", "wonderful": "terrible",
    "is": "is not", "was": "was not", "profits": "losses", "strong": "weak",
}  # fmt: skip


def _edited(paragraph: str) -> str:
    words = paragraph.split(" ")
    swapped = [_SWAPS.get(word.lower(), word) for word in words]
    if swapped == words:
        swapped.append("(edited)")
    return " ".join(swapped)


def _counterfactual(prompt: str, paragraph: str) -> str:
    edited = _edited(paragraph)
    return _pick(
        prompt,
        [
            (35, f"Paragraph: {edited}"),
            (25, f"Sure, here is the edited paragraph:\n{edited}"),
            (15, edited),
            (10, f'"{edited}"'),
            (8, "I am sorry, I cannot edit this paragraph."),
            (7, f"Here are some suggestions:\n<ul><li>{edited}</li><li>{paragraph}</li></ul>"),
        ],
    )


def _salient_words(paragraph: str, count: int) -> list[str]:
    words = sorted({w for w in re.findall(r"[A-Za-z]+", paragraph) if len(w) > 3}, key=lambda w: (-len(w), w))
    return words[:count] or paragraph.split()[:1]


def _redaction(prompt: str, paragraph: str, mask: str) -> str:
    redacted = paragraph
    for word in _salient_words(paragraph, 3):
        redacted = re.sub(rf"\b{re.escape(word)}\b", mask, redacted)
    return _pick(
        prompt,
        [
            (40, f"Paragraph: {redacted}"),
            (25, f"Here is the redacted paragraph:\n\n{redacted}"),
            (20, redacted),
            (8, "Sorry, I cannot redact this paragraph."),
            (7, "Hi there! I can help with that."),
        ],
    )


def _importance(prompt: str, paragraph: str) -> str:
    words = _salient_words(paragraph, 3)
    return _pick(
        prompt,
        [
            (35, "\n".join(f"{i}. {word}" for i, word in enumerate(words, 1))),
            (20, "The most important words are: " + ", ".join(words) + "."),
            (15, "\n".join(f'* "{word}"' for word in words)),
            (15, ", ".join(words)),
            (10, "I cannot answer that."),
            (5, ""),
        ],
    )
