"""Events to state: attribution, delayed-feedback labels and time-decayed CVR per setup.

Pure logic (decay, the per-click state machine, the CVR estimator) lives apart from the Faust
wiring so it can be tested without a broker.
"""
