"""infer's predictions for people, as TensorFlow's label_image example prints them: one block per
image, its path, then its top-k labels, most probable first, each with its probability."""

from __future__ import annotations

import json


def read_rows(text: str) -> list[dict]:
    """The rows of a JSON-lines predictions file (the container's --format jsonl)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def render(rows: list[dict]) -> str:
    blocks = []
    for row in rows:
        lines = [str(row["path"])] + [f"  {entry['label']} ({float(entry['probability']):.5f})"
                                      for entry in row["top_k"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def for_people(text: str) -> str:
    """JSON-lines predictions as label_image's blocks; anything else (CSV asked for by --format) as it is."""
    try:
        return render(read_rows(text))
    except (ValueError, KeyError, TypeError, AttributeError):
        return text.rstrip("\n")
