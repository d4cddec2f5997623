"""Incremental training: windows of labeled examples, a validation gate, a versioned registry.

``windows`` cuts the labeled-example stream by event time, ``gate`` decides whether a candidate
may replace the serving model, ``checkpoint`` keeps weights and optimizer state between windows,
``registry`` publishes versions atomically, and ``loop`` (``rarecvr train``) runs it all.
"""
