"""Deployment: the trained classifier as a SavedModel for TF Serving and as
TFLite models for devices, checked against the trained model; and prediction on
audio files with either.

  serving.py   the served graph (front end + classifier) and its signatures
  warmup.py    TF Serving warm-up requests
  tflite.py    TFLite conversion (float32, dynamic range, int8), LiteRT runner
  exporter.py  --mode=export: versions, atomic writes, checks, export_report.json
  predict.py   --mode=predict: files -> JSON lines

`export` imports `models` and `data` (the same front end the training pipeline
runs), never `training`.
"""
