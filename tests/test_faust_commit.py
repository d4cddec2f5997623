"""Faust's commit offset with an offset acknowledged twice: Faust alone stalls at the first
duplicate, the worker's transport (streams.faust_commit) commits the whole run."""

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_driver
from faust.types import TP

from streams import faust_commit


async def _noop(*args):
    return None


def consumer(transport_class):
    app = faust.App("test-commit", broker="kafka://127.0.0.1:9")
    transport = transport_class(app.conf.broker_consumer, app)
    return transport.create_consumer(
        callback=_noop, on_partitions_revoked=_noop, on_partitions_assigned=_noop
    )


@pytest.mark.parametrize(
    ("transport", "expected"), [(faust_driver.Transport, 6), (faust_commit.Transport, 8)]
)
def test_offsets_acknowledged_twice_are_committed_in_one_step(transport, expected):
    c = consumer(transport)
    tp = TP("clicks", 0)
    c._committed_offset[tp] = 5
    c._acked[tp] = [5, 5, 6, 6, 7]
    c._acked_index[tp] = {5, 6, 7}
    assert c._new_offset(tp) == expected


def test_a_gap_still_holds_the_commit():
    c = consumer(faust_commit.Transport)
    tp = TP("clicks", 0)
    c._committed_offset[tp] = 5
    c._acked[tp] = [8, 8, 9]  # 5..7 not acknowledged yet
    c._acked_index[tp] = {8, 9}
    assert c._new_offset(tp) is None
