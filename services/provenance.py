"""What produced a result: the `provenance` object of the result JSON and the Parquet file.

A result's provenance is built from where each part is known. The job's part (model, chat
template, system message, sampling, limit / start / stop) comes from the `Chat` and `Job`
every question of the job is asked with, so `introspect evaluate` and the aggregator (from
the job's manifest) build it alike. Where answers came from is known where they are
generated: the gateway says it on each reply (`AnswerSource`: the kind of server, its
host:port, the model id it reports), the scorer carries it with the transcript into the
scored result, and the aggregator keeps each distinct source of a job.

`conditions` is the part that decides what the answers are. Two results of one experiment
with the same conditions are the same experiment run again, and the later may replace the
earlier (`result_files` decides); where, when and by which release it ran are recorded
but are not conditions: a stand-in on another port, or a re-run tomorrow, is the same run.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from proto import MAX_SOURCES, AnswerSource, Chat, Job

from .backends import split_spec
from .core.chat import FALCON_DEFAULT_SYSTEM, FORMATS, LLAMA2_DEFAULT_SYSTEM
from .standin.answers import STANDIN_MODEL_ID

PROVENANCE_FORMAT = 1  # the layout of the `provenance` object, for readers of old files
PACKAGE = "introspect"
MAX_JOB_SOURCES = 16  # distinct sources a job's provenance lists; more are counted, not listed
IN_PROCESS = "in-process"  # the endpoint of the stand-in `introspect evaluate` runs in its own process

# How `durations` is computed, said in the file itself.
DURATIONS_COMPUTED = {
    "setup": "seconds from taking the job to the first question: checking it and opening its dataset split",
    "eval": (
        "the inference seconds the model server reported (TGI's x-inference-time header; OpenAI-compatible "
        "servers report none, so 0), summed over every generation the server computed for this run; a "
        "generation answered from the generation cache, or joined to an identical one in flight, counts 0"
    ),
}

# The built-in formats' default system messages ("default" means this text).
_DEFAULT_SYSTEM_TEXT: dict[str, str | None] = {"Llama2": LLAMA2_DEFAULT_SYSTEM, "Falcon": FALCON_DEFAULT_SYSTEM}


# -- where answers come from --


def endpoint_of(url: str) -> str:
    """`host:port` of a server URL (with its scheme's port when it names none): never its
    user, password, path or query."""
    parts = urlsplit(split_spec(url)[1])
    try:
        port = parts.port
    except ValueError:  # not a number: say nothing of it
        port = None
    host = parts.hostname or "?"
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def answer_source(
    backends: Sequence[str], model_id: str, *, service: str | None = None, engine: str = "tgi"
) -> AnswerSource:
    """The source of a gateway's (or `introspect evaluate`'s) answers: its backend specs (or
    the Kubernetes Service its `engine` pods are found through), serving `model_id`. vLLM,
    SGLang and other OpenAI-compatible servers are all `openai-compatible` (the wire contract's
    kinds). A server reporting the stand-in's model id is the stand-in, whatever it speaks."""
    if service is not None:
        kind, endpoint = ("tgi" if engine == "tgi" else "openai-compatible"), service
    else:
        openai = backends and all(split_spec(b)[0] != "tgi" for b in backends)
        kind = "openai-compatible" if openai else "tgi"
        endpoint = ",".join(sorted({endpoint_of(url) for url in backends}))
    if model_id == STANDIN_MODEL_ID:
        kind = "stand-in"
    return AnswerSource(kind, _bounded(endpoint), _bounded(model_id))  # type: ignore[arg-type]


def standin_in_process() -> AnswerSource:
    """The stand-in `introspect evaluate` runs in its own process, with no server."""
    return AnswerSource("stand-in", IN_PROCESS, STANDIN_MODEL_ID)


def cache_only(model_id: str) -> AnswerSource:
    """A gateway with no server, answering from its cache of `model_id`'s answers."""
    return AnswerSource("cache-only", "", _bounded(model_id))


def merge_sources(known: Sequence[AnswerSource], new: Iterable[AnswerSource | None], limit: int) -> list[AnswerSource]:
    """`known` with each source of `new` not in it yet, up to `limit` of them."""
    merged = list(known)
    for source in new:
        if source is not None and source not in merged and len(merged) < limit:
            merged.append(source)
    return merged


def _bounded(text: str, limit: int = 256) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the job's part --


def chat_template(chat: Chat) -> dict[str, str]:
    """The chat template: a built-in format by name, a model's own Jinja source by its sha256."""
    if chat.template is None:
        from .models import chat_format_of

        return {"name": chat_format_of(chat.model, None).name}
    source = chat.template.get("chat_template")
    text = source if isinstance(source, str) else json.dumps(source, sort_keys=True)
    return {"name": "jinja", "sha256": hashlib.sha256(text.encode()).hexdigest()}


def system_message(chat: Chat) -> dict[str, str | None]:
    """The system message: the choice (default, none, custom) and the text the model is sent
    (null for none; for `default` of a model's own template, what that template does)."""
    if chat.system == "none":
        return {"choice": "none", "text": None}
    if chat.system == "default":
        name = chat_template(chat)["name"]
        return {"choice": "default", "text": _DEFAULT_SYSTEM_TEXT.get(name) if name in FORMATS else None}
    return {"choice": "custom", "text": chat.system}


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown"


def iso_time(unix_seconds: float | None) -> str | None:
    if not unix_seconds:
        return None
    return datetime.datetime.fromtimestamp(unix_seconds, datetime.UTC).isoformat(timespec="seconds")


def build(
    *,
    job: Job,
    chat: Chat | None,
    sources: Sequence[AnswerSource],
    more_sources: bool = False,
    started_at: float | None,
    finished_at: float,
    written_by: str,
) -> dict[str, Any]:
    """The `provenance` object of one result. `chat` None (a manifest from before
    provenance) leaves the job's chat settings unknown (null)."""
    model_ids = sorted({source.model_id for source in sources})
    return {
        "format": PROVENANCE_FORMAT,
        "stand_in": any(source.backend == "stand-in" for source in sources),
        "answers_from": [
            {"backend": s.backend, "endpoint": s.endpoint or None, "model_id": s.model_id}
            for s in sorted(sources, key=lambda s: (s.backend, s.model_id, s.endpoint))
        ],
        "answers_from_truncated": more_sources,  # more distinct sources than are listed
        "served_model_id": model_ids[0] if len(model_ids) == 1 else (model_ids or None),
        "model": job.model if chat is None else chat.model,
        "chat_template": None if chat is None else chat_template(chat),
        "system_message": None if chat is None else system_message(chat),
        "sampling": None if chat is None else _sampling(chat),
        "selection": {"limit": job.limit, "start": job.start, "stop": job.stop},
        "package": {"name": PACKAGE, "version": package_version()},
        "started_at": iso_time(started_at),
        "finished_at": iso_time(finished_at),
        "written_by": written_by,
        "durations": DURATIONS_COMPUTED,
    }


def _sampling(chat: Chat) -> dict[str, Any]:
    sampling = chat.sampling
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "repetition_penalty": sampling.repetition_penalty,
        "top_k": sampling.top_k,
        "max_new_tokens": sampling.max_new_tokens,
        "stop": list(sampling.stop),
        "seed": sampling.seed,
    }


# -- comparing two results' provenance --

# What decides the answers, and so what a result may only be replaced under.
CONDITIONS = ("stand_in", "backends", "served_model_id", "model", "chat_template", "system_message", "sampling",
              "selection")  # fmt: skip


def conditions(provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    """The conditions of a result (None for a result written without provenance)."""
    if not isinstance(provenance, dict):
        return None
    sources = provenance.get("answers_from") or []
    backends = sorted({s.get("backend") for s in sources if isinstance(s, dict)}, key=str)
    whole = {**provenance, "backends": backends}
    return {name: whole.get(name) for name in CONDITIONS}


def differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two results' conditions, each as `name: old -> new`."""
    before, after = conditions(old), conditions(new)
    if before is None:
        return ["provenance: none recorded (written before provenance, or by hand)"]
    assert after is not None
    return [
        f"{name}: {_short(before[name])} -> {_short(after[name])}" for name in CONDITIONS if before[name] != after[name]
    ]


def is_real(provenance: dict[str, Any] | None) -> bool:
    """Whether a result may be a real model's: anything but a result known to be the stand-in's
    (one without provenance may be real, and is protected as such)."""
    return not (isinstance(provenance, dict) and provenance.get("stand_in") is True)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["MAX_SOURCES", "answer_source", "build", "conditions", "differences", "is_real", "merge_sources"]
