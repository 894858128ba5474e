"""Top-1 agreement of a converted model with TensorFlow fp32 on held-out images (the kit's data/val):
measured by the bench and by the int8 conversions."""
from __future__ import annotations

import numpy as np

from ..common import InsideError
from .session import ModelSession, SessionOptions


def held_out_agreement(model: ModelSession, alone, key: str, directory: str, batch: int = 8) -> dict:
    """Top-1 of the artefact against TensorFlow fp32 on the same graph, on images the golden never saw
    (the kit's data/val), preprocessed as the manifest says."""
    from ..data.image_files import decode_image_file, for_spec, list_image_files
    from .check import in_batches

    files = list_image_files(directory)
    if not files:
        raise InsideError(f"{directory} holds no images to measure top-1 agreement on")
    inputs = np.stack([model.spec.apply(decode_image_file(path, **for_spec(model.spec))) for path in files])
    inputs = inputs.astype(np.float32)
    reference = ModelSession(model.files, SessionOptions(allow_soft_placement=False, threads=model.threads))
    reference.open()
    try:
        wanted = reference.predict
        ours = np.concatenate([in_batches(lambda b: {"out": alone(b)[key]}, inputs[i:i + batch], model.limit)["out"]
                               for i in range(0, len(inputs), batch)])
        theirs = np.concatenate([in_batches(wanted, inputs[i:i + batch], model.limit)["out"]
                                 for i in range(0, len(inputs), batch)])
    finally:
        reference.close()
    same = (ours.reshape(len(ours), -1).argmax(axis=1) == theirs.reshape(len(theirs), -1).argmax(axis=1))
    return {"images": int(len(same)), "agree": int(same.sum()), "agreement": round(float(same.mean()), 4)}
