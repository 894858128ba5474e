"""The kit's numpy presets against the TensorFlow reference of slim's steps, on real image files.
Prints {file: {preset: max abs difference in input units, ...}} as JSON.

Usage: python compare_presets.py IMAGE_DIR SIZE"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from slim_preprocessing import decode, inception_eval, vgg_eval  # noqa: E402

from incontainer.data.decode import without_tensorflow  # noqa: E402
from incontainer.data.image_files import decode_image_file, for_spec  # noqa: E402
from incontainer.data.preprocess import preset_spec  # noqa: E402


def main() -> int:
    directory, size = sys.argv[1], int(sys.argv[2])
    results = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        image = decode(path)
        with open(path, "rb") as handle:
            data = handle.read()
        # TensorFlow's decoding reproduced without TensorFlow (simplejpeg, Pillow for PNG), both IDCTs.
        results[name] = {f"without-tensorflow-{method}": {
            "max_abs": float(np.max(np.abs(without_tensorflow(data, name, method == "accurate", True).astype(np.int64)
                                           - tf.io.decode_jpeg(data, channels=3, dct_method=dct).numpy()
                                           if name.endswith(".jpg") else
                                           without_tensorflow(data, name, False, True).astype(np.int64)
                                           - image.numpy())))}
            for method, dct in (("fast", "INTEGER_FAST"), ("accurate", "INTEGER_ACCURATE"))}
        for preset, reference in (("vgg", lambda im, spec: vgg_eval(im, size, size, spec.resize_side)),
                                  ("inception", lambda im, spec: inception_eval(im, size, size, spec.central_fraction))):
            spec = preset_spec(preset, size, size)
            theirs = reference(image, spec).numpy()
            ours = spec.apply(decode_image_file(path, **for_spec(spec)))
            results.setdefault(name, {})[preset] = {
                "max_abs": float(np.max(np.abs(ours.astype(np.float64) - theirs))),
                "mean_abs": float(np.mean(np.abs(ours.astype(np.float64) - theirs))),
                "level": spec.level, "shape": list(ours.shape)}
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
