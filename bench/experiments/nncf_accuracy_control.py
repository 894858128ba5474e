"""The ad hoc measurement behind bench/int8-nncf-settings.json's accuracy_control rows: NNCF's accuracy
control against plain post-training quantization (the kit's settings) on the bench model, judged by
top-1 agreement with TensorFlow fp32 on held-out images and by OpenVINO's own batch-8 speed. Not part of
the kit. Run it in the bench image with this file beside scripts/incontainer, after `make bench` made
out/bench/model-224-plain:

    cp -r scripts/incontainer /tmp/x && cp bench/experiments/nncf_accuracy_control.py /tmp/x/
    docker run --rm --network none -v /tmp/x:/opt/coldchain/scripts/incontainer:ro \
      -v $PWD/out/bench/model-224-plain:/model:ro -v $PWD/out/data:/data:ro --entrypoint python \
      coldchain-bench:cpu -m incontainer.nncf_accuracy_control /model /data/train /data/val prob 0.005

Modes: plain (nncf.quantize), agree (accuracy control on top-1 agreement with fp32 over the calibration
images), prob (on 1 - max probability error against fp32, averaged over them); then the max drop."""
import json, sys, time
import numpy as np
import nncf, openvino
from incontainer.golden.session import ModelSession
from incontainer.graph.model_files import ModelLoader
from incontainer.runtimes.tflite_conversion import calibration_for
from incontainer.runtimes.backends import read_openvino, openvino_backend
from incontainer.golden.held_out import held_out_agreement
from incontainer.golden import quantized

model_dir, train, val, mode, max_drop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
model = ModelSession(ModelLoader.for_model(model_dir).files().require())
key = model.output_key
tensors = {key: model.tensors[key]}
batches, _ = calibration_for(model, "openvino-int8", train, False)
samples = [np.ascontiguousarray(b[0], dtype=np.float32) for b in batches()]
source = model.files.verified_path
full = read_openvino(source, model.tensors, source)
alone = openvino.Model([full.output(tensors[key])], full.get_parameters(), "outputs")
core = openvino.Core()
fp32 = core.compile_model(alone, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
def probs(compiled, x):
    out = np.array(compiled(x)[0]).reshape(1, -1)
    return np.asarray(quantized.as_probabilities(out, model.softmax_needed), dtype=np.float64).reshape(-1)
refs = [probs(fp32, s) for s in samples]
items = list(zip(samples, refs))
def validate(compiled, data):
    values = []
    for sample, ref in data:
        p = probs(compiled, sample)
        values.append(float(p.argmax() == ref.argmax()) if mode == "agree" else 1.0 - float(np.abs(p - ref).max()))
    return float(np.mean(values)), values
adv = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
start = time.time()
ds = nncf.Dataset(items, lambda item: item[0])
if mode == "plain":
    q = nncf.quantize(alone, ds, subset_size=len(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                      fast_bias_correction=True, advanced_parameters=adv)
else:
    q = nncf.quantize_with_accuracy_control(alone, ds, ds, validate, max_drop=max_drop, subset_size=len(items),
                                            preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=True,
                                            advanced_quantization_parameters=adv)
took = time.time() - start
backend = openvino_backend(q, tensors, "int8", 0)
held = held_out_agreement(model, backend.outputs_only([key]), key, val)
import openvino as ov
def timed(m):
    c = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.repeat(samples[0], 8, axis=0)
    r = c.create_infer_request(); r.infer({0: x})
    t = time.perf_counter()
    for _ in range(20): r.infer({0: x})
    return round(160 / (time.perf_counter() - t), 1)
plainq = nncf.quantize(alone, ds, subset_size=len(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                       fast_bias_correction=True, advanced_parameters=adv)
speeds = {"fp32": timed(alone), "plain_int8": timed(plainq), "this": timed(q)}
fq = sum(1 for op in q.get_ops() if op.get_type_name() == "FakeQuantize")
print(json.dumps({"mode": mode, "max_drop": max_drop, "seconds": round(took, 1), "fake_quantize_nodes": fq,
                  "precision": backend.precision_effective, "held_out": held, "batch8_images_per_s": speeds}))
