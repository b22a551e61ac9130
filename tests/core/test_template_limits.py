"""A model's chat template renders within limits: one built to spin or to fill memory is
refused as that request's error (TemplateOverLimit, a TemplateError), quickly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from services.core.chat import NO_SYSTEM, ChatTurn, jinja_format

NORMAL = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

HOSTILE = {
    "nested loops making nothing": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string repetition": "{{ 'x' * 1000000000 }}",
    "list repetition": "{{ (range(100000)|list) * 100000 }}",
    "a huge power": "{{ 10 ** 100000000 }}",
    "%-format width": "{{ '%1000000000s' % 'x' }}",
    "format filter width": "{{ '%1000000000s'|format('x') }}",
    "str.format width": "{{ '{:>1000000000}'.format('x') }}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "indent filter": "{{ 'x\\ny'|indent(1000000000) }}",
    "a loop making megabytes": "{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}",
}


def test_a_normal_template_renders_as_before() -> None:
    chat = jinja_format("m", {"chat_template": NORMAL})
    assert chat.from_model
    assert chat.render([ChatTurn("Hi.")], NO_SYSTEM) == "<|user|>Hi.<|assistant|>"


def test_every_hostile_template_is_refused_within_its_limits() -> None:
    """In a process of its own with a ceiling: without the limits, the first case alone
    would run for hours and the others would ask for gigabytes."""
    script = textwrap.dedent(
        f"""
        import json
        from services.core.chat import NO_SYSTEM, ChatTurn, TemplateOverLimit, jinja_format
        refused = {{}}
        for name, source in {HOSTILE!r}.items():
            try:
                jinja_format("m", {{"chat_template": source}}).render([ChatTurn("Hi.")], NO_SYSTEM)
            except TemplateOverLimit as error:
                refused[name] = str(error)
        print(json.dumps(refused))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import json

    refused = json.loads(done.stdout)
    assert sorted(refused) == sorted(HOSTILE)
    assert "steps" in refused["nested loops making nothing"]
    assert "characters" in refused["a loop making megabytes"]
