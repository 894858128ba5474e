"""Labels files: one class name per line, or slim's `id:name` lines."""
from __future__ import annotations

import os
from typing import List, Optional

from ..common import InsideError
from ..confine import label_ids, read_bounded


def read_labels_file(path: str, classes: Optional[int] = None) -> List[str]:
    """Accept our one-name-per-line labels.txt as well as slim's `id:name` lines; bounded (a labels file
    that is /dev/zero is refused), and no id past the model's `classes` (or the file's lines)."""
    try:
        lines = [line.rstrip("\r") for line in read_bounded(path, "labels").decode("utf-8").split("\n")]
    except FileNotFoundError:
        raise InsideError(f"labels file not found: {path}; write one class name per line (or slim's id:name)") from None
    except PermissionError:
        raise InsideError(f"cannot read labels file {path}: permission denied; the container runs as uid {os.getuid()}, "
                          "so make the file and its directory readable by others (chmod o+rx DIR, o+r FILE)") from None
    except IsADirectoryError:
        raise InsideError(f"labels file {path} is a directory; pass the labels text file itself") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InsideError(f"cannot read labels file {path} ({error}); it must be UTF-8 text") from None
    lines = [line for line in lines if line.strip()]
    if lines and all(":" in line and line.split(":", 1)[0].strip().isdigit() for line in lines):
        by_id = dict(label_ids(lines, path, classes))
        count = max(by_id) + 1
        missing = [index for index in range(count) if index not in by_id]
        if missing:
            raise InsideError(f"labels file {path} has no name for class ids {missing[:5]}; list every id from 0")
        return [by_id[index] for index in range(count)]
    return [line.strip() for line in lines]
