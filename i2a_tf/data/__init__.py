"""Corpora, TFRecords, the log-mel front end and the tf.data input pipelines."""
