"""Chat formats beyond the golden file: model shorthands and Jinja templates from a local file."""

from __future__ import annotations

import json

import pytest

from services.core.chat import (
    LLAMA2,
    MISTRAL,
    NO_SYSTEM,
    ChatTurn,
    SystemMessage,
    SystemMessageNotSupported,
    UnknownModel,
    clean_answer,
    jinja_format,
    resolve_model,
    template_mismatch,
)
from services.models import load_model
from tests.conftest import FIXTURES

MODELS = FIXTURES / "models"


def test_shorthands_and_hub_ids_resolve_to_the_paper_models() -> None:
    assert resolve_model("llama2-70b").repo_id == "meta-llama/Llama-2-70b-chat-hf"
    assert resolve_model("tiiuae/falcon-7b-instruct").shorthand == "falcon-7b"
    assert resolve_model("mistral-v2-7b").format is MISTRAL
    with pytest.raises(UnknownModel, match="unknown model 'gpt-9'"):
        resolve_model("gpt-9")


def test_the_paper_ran_llama2_without_a_system_message() -> None:
    model = load_model("llama2-7b")
    assert model.chat_format is LLAMA2
    assert model.default_system == NO_SYSTEM


def test_a_chatml_template_renders_from_a_local_tokenizer_config() -> None:
    model = load_model(str(MODELS / "chatml-tiny" / "tokenizer_config.json"))
    assert model.name == "chatml-tiny"
    prompt = model.chat_format.render([ChatTurn("Hello there.", "Hi!"), ChatTurn("What is 1 + 1?")], NO_SYSTEM)
    assert prompt == (
        "<|im_start|>user\nHello there.<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>\n"
        "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model.chat_format.stop == ("<|im_end|>",)


def test_a_jinja_template_takes_a_custom_system_message_and_a_prefix() -> None:
    model = load_model(str(MODELS / "chatml-tiny"))  # the folder works too
    prompt = model.chat_format.render([ChatTurn("Hi", "The answer is")], SystemMessage.parse("Be terse."))
    assert prompt == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nThe answer is"
    )


def test_a_template_that_refuses_a_system_message_says_so_clearly() -> None:
    model = load_model(str(MODELS / "no-system-tiny" / "tokenizer_config.json"))
    assert model.chat_format.render([ChatTurn("Hi")], NO_SYSTEM) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(SystemMessageNotSupported, match="System role not supported"):
        model.chat_format.render([ChatTurn("Hi")], SystemMessage.parse("Be terse."))


def test_a_tokenizer_config_without_a_template_is_refused(tmp_path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(UnknownModel, match="has no chat_template"):
        load_model(str(config))
    with pytest.raises(UnknownModel, match=r"no tokenizer_config\.json"):
        load_model(str(tmp_path / "missing.json"))


def test_named_templates_use_the_default_one() -> None:
    chat_format = jinja_format(
        "multi", {"chat_template": [{"name": "default", "template": "{{ messages[0].content }}"}]}
    )
    assert chat_format.render([ChatTurn("x")], NO_SYSTEM) == "x"


def test_custom_system_messages_get_distinct_experiment_id_parts() -> None:
    assert SystemMessage.parse("default").id_part == "default"
    assert SystemMessage.parse("none").id_part == "none"
    first, second = SystemMessage.parse("Be terse."), SystemMessage.parse("Be kind.")
    assert first.id_part.startswith("custom-") and first.id_part != second.id_part


@pytest.mark.parametrize(
    ("generated", "expected"),
    [("  positive</s>", "positive"), ("positive [INST]", "positive"), ("a</s></s>", "a</s>"), ("\nno\n", "no")],
)
def test_clean_answer_removes_one_stop_sequence_then_white_space(generated: str, expected: str) -> None:
    assert clean_answer(generated, LLAMA2.stop) == expected


def test_a_server_of_another_family_than_the_template_is_noticed() -> None:
    assert template_mismatch("Llama2", "mistralai/Mistral-7B-Instruct-v0.2")
    assert template_mismatch("Mistral", "tiiuae/falcon-7b-instruct")
    assert not template_mismatch("Llama2", "meta-llama/Llama-2-70b-chat-hf")
    assert not template_mismatch("Falcon", "/models/falcon-40b-instruct")
    assert not template_mismatch("Llama2", "introspect-stand-in")  # the stand-in answers any format
    assert not template_mismatch("smollm2-135m-instruct", "anything")  # a model's own template
