"""The container side of coldchain: everything that runs inside the images, by stage.

- contract.py: names, codes and formats the host shares (the host loads this same file)
- common.py, runtime.py, env_check.py: errors and CLI plumbing; what this runtime is; the build-time check
- data/: image files, preprocessing (slim's presets), labels, datasets
- graph/: frozen graphs (reading, sniffing, importing), manifests, the model directory read once
  (model_files) and written in one place (model_directory), custom-op libraries
- diagnosis/: the doctor (manifest, static, import and run stages), its findings
- golden/: the golden probe (inputs, comparison, the check every prediction passes, the drift probe),
  the model session infer, the probe and the speed bench share
- steps/: the pipeline steps (make_data, train, freeze, infer, adopt, reexport)
- measure/: inference speed, the drift heatmap, the sandbox report

Modules run as ``python -m incontainer.<package>.<module>`` (contract.MODULES). Only steps.train,
steps.freeze and steps.resnet import tf_slim; everything an inference image runs stays importable
without it, on every Python and TensorFlow the drift matrix covers.
"""
