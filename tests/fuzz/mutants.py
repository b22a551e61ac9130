"""Mutants of real messages: the shapes a broken or hostile publisher could put on a subject."""

from __future__ import annotations

import copy
import random
from typing import Any

import msgpack

from proto import Message, encode

_NESTED = "\x00nested\x00"  # stands for a value nested 1,000 deep, spliced in after packing
HOSTILE: list[Any] = [
    None, True, 0, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"),
    "", " ", "x" * 5000, "\x00", "ü" * 10, [], [[]], [None], {}, {"a": 1}, {1: 2}, b"\xff\x00", _NESTED,
]  # fmt: skip
_NESTED_PACKED = msgpack.packb(_NESTED)
_NESTED_RAW = b"\x91" * 1000 + b"\xc0"  # [[[...[nil]...]]], 1,000 deep


def _hostile(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(HOSTILE))  # a copy: a later mutation must not change the list, or loop


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*path, index))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def mutate(message: Message, rng: random.Random) -> bytes:
    """`message` encoded, then one to three of: a value replaced by a hostile one, a field
    removed, a field added, the whole message replaced by a hostile value; or its bytes cut
    or flipped."""
    if rng.random() < 0.1:
        raw = bytearray(encode(message))
        if rng.random() < 0.5:
            return bytes(raw[: rng.randrange(len(raw))])
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    tree = msgpack.unpackb(encode(message))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(tree))
        roll = rng.random()
        if not path:
            tree = _hostile(rng) if roll < 0.2 else tree
            continue
        parent = _at(tree, path[:-1])
        if roll < 0.7:
            parent[path[-1]] = _hostile(rng)
        elif roll < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "KIND", "v", "kind", 7])] = _hostile(rng)
    return msgpack.packb(tree).replace(_NESTED_PACKED, _NESTED_RAW)
