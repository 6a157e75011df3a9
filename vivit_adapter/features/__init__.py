"""Stage 2 from cached frozen features: the manifest that ties a cache to its model, and
extraction (the frozen spatial encoder run once per clip and view).

The on-disk format and its tf.data readers live in `data_pipelines.feature_cache`.
"""
