"""Paragraph extraction, rule by rule, in the paper's order and with the paper's quirks.

The golden cases hold answers that start with a lead-in; real models also put lead-ins in the
middle, indent lines, answer in HTML and refuse in many ways. Each case below is built from one
rule of the paper's extractor; the comment says which.
"""

from __future__ import annotations

import pytest

from services.core.extract import extract_paragraph

EDIT = "The bakery opened a second shop."

CASES = [
    # A "Here is ...:" lead-in anywhere in the answer, not only at its start.
    (f"The statement does not follow. Here is the edited paragraph without extra changes:\n\n{EDIT}", EDIT),
    (f"I changed one word. Here's the result: {EDIT}", EDIT),
    (f"Some notes first. Here are my edits:\n{EDIT}", EDIT),
    # Two lead-ins: the last one wins.
    (f"Here is my first try: The bakery closed.\nHere is a better version: {EDIT}", EDIT),
    (f"Here's a draft:\nOne.\n\nHere's the final paragraph:\n{EDIT}", EDIT),
    # The lead-in is case-sensitive (the only such rule): "here is" in lower case is text.
    (f"Done, here is the text: {EDIT}", f"Done, here is the text: {EDIT}"),
    # Between "Here is" and the colon only letters, digits and spaces: no comma, no bracket, no line break.
    (f"Here is the paragraph, edited:\n{EDIT}", EDIT),  # then the "starts with" rule: drop the first line
    (f"Here is a modified paragraph with [REDACTED] words: {EDIT}", None),  # no line to drop
    (f"The answer.\nHere is\nthe text: {EDIT}", f"The answer.\nHere is\nthe text: {EDIT}"),
    # Listed markers come before the "Here is" search; the last listed marker wins.
    (f"Paragraph: {EDIT}\nHere is why: it reads well.", f"{EDIT}\nHere is why: it reads well."),
    (f"Here is the result. Paragraph: {EDIT}", EDIT),
    (f"Paragraph: The bakery closed.\n\nThe revised paragraph reads: {EDIT}", EDIT),
    (f"I changed 'closed' to: {EDIT}", EDIT),
    # A listed marker must start at a word boundary and be followed by a character.
    (f"Turn it into: {EDIT}", f"Turn it into: {EDIT}"),
    (f"{EDIT} The revised paragraph reads:", f"{EDIT} The revised paragraph reads:"),
    # ... and the character after it is consumed, even a quote.
    (f'Paragraph:"{EDIT}"', f'{EDIT}"'),
    # The "Here is ...:" search comes before dropping the first line of an opener.
    (f"Sure, here is the edit.\nHere is the paragraph: {EDIT}\nThanks.", f"{EDIT}\nThanks."),
    ("Sure, here is the edited paragraph.", None),
    (f"Based on your input\n{EDIT}", EDIT),
    (f"Thank you for your feedback.\n{EDIT}", EDIT),
    # Lead-ins followed by HTML lists: tags become blank lines, items "* ".
    (f"Here is the edited paragraph:\n<ul><li>{EDIT}</li></ul>", f"* {EDIT}"),
    (f"Paragraph:<ol>\n<li>{EDIT}</li>\n</ol>", f"* {EDIT}"),
    (f"Here is the edited paragraph:<p>{EDIT}</p><p>It sells bread.</p>", f"{EDIT}\n\nIt sells bread."),
    # Several suggestions are refused: "here are some suggestions" and more than one item.
    (f"Here are some suggestions:\n<ul><li>{EDIT}</li><li>The bakery closed.</li></ul>", None),
    (f"Here are some suggestions:\n- {EDIT}\n- The bakery closed.", None),
    (f"Here are some suggestions:\n<p>{EDIT}</p>", EDIT),
    # A numbered list without "here are some suggestions" is kept as it is.
    (f"Here are two options:\n1. {EDIT}\n2. The bakery closed.", f"1. {EDIT}\n2. The bakery closed."),
    # The cut to the first "<" happens only where a tag follows a word character.
    (f"Sure thing<p>{EDIT}</p>", EDIT),
    (f"Sure thing:\n<p>{EDIT}</p>", f"Sure thing:\n\n{EDIT}"),
    # Tags: block tags and breaks in any case; list items only in lower case; entities stay.
    (f"<P>{EDIT}</P>", EDIT),
    (f"{EDIT}<BR>It sells bread.", f"{EDIT}\nIt sells bread."),
    (f"{EDIT}<br />It sells bread.", f"{EDIT}\nIt sells bread."),
    (f"<LI>{EDIT}</LI>", f"<LI>{EDIT}</LI>"),
    ("Fish &amp; chips", "Fish &amp; chips"),
    # Every line stripped, runs of line breaks merged into one blank line, the whole stripped.
    (f"Paragraph:\n   {EDIT}\n\n\n\n   It sells bread.   \n", f"{EDIT}\n\nIt sells bread."),
    (f"\t{EDIT}  \n\t\tIt sells bread.", f"{EDIT}\nIt sells bread."),
    # Runs merge before lines are stripped, so lines of spaces stay blank lines of their own.
    (f"{EDIT}\n  \n  \nIt sells bread.", f"{EDIT}\n\n\nIt sells bread."),
    # Refusals: fixed openings (with their comma) and phrases anywhere.
    (f"I am sorry, I cannot edit this. {EDIT}", None),
    ("I cannot determine the sentiment.", None),
    (f"Hi there! {EDIT}", None),
    ("That goes against my programming.", None),
    ("As per my programming, I cannot edit reviews.", None),
    (f"I am sorry but {EDIT}", f"I am sorry but {EDIT}"),
    (f"Hello! {EDIT}", f"Hello! {EDIT}"),
    ("Paragraph: The film is as an AI would imagine love.", "The film is as an AI would imagine love."),
    # Word characters and case folding are the `regex` module's, as in the paper: combining
    # marks are word characters, "²" is not, and "ß" folds to "ss".
    ("Here is the paragraph in हिंदी: यह फिल्म अच्छी थी।", "यह फिल्म अच्छी थी।"),
    ("Here is the edited review of Ame\u0301lie: Great film.", "Great film."),
    ("Here is the ²text: body", None),
    ("while removing unneceßary details: The bakery opened.", "The bakery opened."),
    ("İ edited the paragraph as follows: body", "İ edited the paragraph as follows: body"),
    # Quotes: one surrounding pair is dropped; what is left empty is nothing.
    (f'"{EDIT}"', EDIT),
    ('"', None),
    ("   ", None),
]


@pytest.mark.parametrize(("answer", "expected"), CASES)
def test_paragraph_rule(answer: str, expected: str | None) -> None:
    assert extract_paragraph(answer) == expected
