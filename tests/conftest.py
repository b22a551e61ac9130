from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
DATASET_MIRROR = FIXTURES / "datasets"


def golden(name: str) -> Any:
    return json.loads((FIXTURES / f"golden_{name}.json").read_text(encoding="utf-8"))
