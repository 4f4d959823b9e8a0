"""Deployment: export any vertebra model (detectors included) to pt2, ONNX or OpenVINO and run it there.

``export_model`` (:mod:`.export`) writes one file per format; ``make_runner`` (:mod:`.runtimes`) runs
an exported model in torch, ONNX Runtime or OpenVINO with the eager model's output structure;
``ExportableDetector`` (:mod:`.detection`) is the single-image graph the detectors export as.
"""
