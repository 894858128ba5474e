"""The encoded goldens' stage check, run where the model would run: for each preset, the golden made
here, then this environment's preprocessing with one thing changed, as serving code gets it wrong.
Prints {preset: {change: {"ok", "stage", "differs_at", "findings"}}} as JSON.

Usage: python encoded_stages.py SIZE"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

from incontainer.data.preprocess import preset_spec, with_fields  # noqa: E402
from incontainer.golden import encoded  # noqa: E402
from incontainer.golden.check import input_path_findings  # noqa: E402

CHANGES = {"none": [], "other-idct": ["decoder=other-idct"], "tensorflow-accurate": ["decoder=tensorflow-accurate"],
           "opencv": ["decoder=opencv", "resize_library=opencv", "alpha_handling=drop"],
           "tf2": ["resize_library=tf2"], "antialias": ["resize_library=toggle-antialias"],
           "bgr": ["channel_order=BGR"], "orientation": None}


def refusals() -> dict:
    """What a decoder this environment cannot reproduce says: a BMP where TensorFlow is absent (only
    TensorFlow decodes it as the model says), JPEG with neither TensorFlow nor simplejpeg, OpenCV
    missing. Absence is simulated by blocking the import."""
    import io

    from PIL import Image

    from incontainer.common import InsideError
    from incontainer.data import decode

    bmp, jpeg = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(bmp, format="BMP")
    Image.new("RGB", (8, 8), (10, 20, 30)).save(jpeg, format="JPEG")
    found = {}
    for name, call, blocked in (
            ("bmp-without-tensorflow", lambda: decode.without_tensorflow(bmp.getvalue(), "x.bmp", False, True), None),
            ("jpeg-without-simplejpeg", lambda: decode.without_tensorflow(jpeg.getvalue(), "x.jpg", False, True),
             "simplejpeg"),
            ("opencv-missing", lambda: decode.decode_pixels(jpeg.getvalue(), "x.jpg", decode.OPENCV, True), "cv2")):
        saved = sys.modules.get(blocked) if blocked else None
        if blocked:
            sys.modules[blocked] = None  # import raises ImportError
        try:
            call()
            found[name] = None
        except InsideError as error:
            found[name] = {"type": type(error).__name__, "message": str(error)}
        finally:
            if blocked:
                sys.modules.pop(blocked)
                if saved is not None:
                    sys.modules[blocked] = saved
    return found


def main() -> int:
    size = int(sys.argv[1])
    results = {}
    for preset in ("vgg", "inception", "coldchain"):
        spec = preset_spec(preset, size, size)
        arrays, rows, section = encoded.make(spec, 11, first_row=0)
        arrays["input"] = rows
        manifest = {"golden": {"encoded": section, "input_key": "input"}}
        for name, change in CHANGES.items():
            if change is None:
                change = ["orientation=" + ("none" if spec.orientation == "exif_transpose" else "exif_transpose")]
            here = with_fields(spec, change, "--preprocessing")
            found = encoded.check(here, manifest, arrays, spec)
            results.setdefault(preset, {})[name] = {
                "ok": found["ok"], "stage": found["stage"], "differs_at": found["differs_at"],
                "findings": [code for code, _, _ in input_path_findings({"encoded": found})],
                "message": encoded.message("M", found) if not found["ok"] else None}
    results["refusals"] = refusals()
    print(json.dumps(results, sort_keys=True, default=lambda value: value.item() if isinstance(value, np.generic) else str(value)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
