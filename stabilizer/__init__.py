"""Hard/soft task assignment of conversion setups, held steady by hysteresis.

``policy`` decides (pure logic), ``peers`` gives a new setup its peers' prior, ``agent`` runs the
policy inside the stream worker and publishes changes to ``rarecvr.task-assignments``, and
``reader`` keeps any process's local view of that compacted topic.
"""
