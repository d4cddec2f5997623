"""The feature schema: inferred from a log, one encoding for tables and records, times in every
form a log has them, and the schema a trainer keeps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rarecvr.logfile import millis
from rarecvr.schema import EncodingError, FeatureSchema, encode_records, encode_table, infer
from trainer.features import NoSchema, choose, drift_message

LOG = pa.table(
    {
        "ip": [87540, 105560, 87540],
        "device": ["iphone", "android", None],
        "spend": [0.5, 2.0, None],
        "flag": [True, False, True],
        "click_time": ["2017-11-07 09:30:38", "2017-11-07 13:40:00", "2017-11-08 00:00:01"],
    }
)


def test_integer_ids_are_categorical_floats_numeric_and_overrides_win():
    schema, notes = infer(LOG, ["ip", "device", "spend", "flag"])
    assert schema == FeatureSchema(("ip", "device", "flag"), ("spend",))
    assert notes == [
        "ip: integers, categorical (ids are hashed; --numeric ip to model it as a number)"
    ]
    schema, _ = infer(LOG, ["ip", "spend"], categorical=("spend",), numeric=("ip",))
    assert schema == FeatureSchema(("spend",), ("ip",))


def test_a_schema_names_what_it_cannot_infer():
    with pytest.raises(KeyError, match="no column"):
        infer(LOG, ["channel"])
    with pytest.raises(ValueError, match="cannot be numeric"):
        infer(LOG, ["device"], numeric=("device",))
    with pytest.raises(ValueError, match="not among the features"):
        infer(LOG, ["ip"], numeric=("spend",))
    with pytest.raises(ValueError, match="both categorical and numeric"):
        FeatureSchema(("ip",), ("ip",))


def test_a_table_and_its_rows_as_records_encode_to_the_same_inputs():
    schema = FeatureSchema(("ip", "device", "flag", "spend_c"), ("spend",))
    table = LOG.append_column("spend_c", LOG["spend"])  # a float column hashed as categories
    rows = [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]
    from_table, from_records = encode_table(table, schema), encode_records(rows, schema)
    for name in schema.names:
        assert from_table[name].tolist() == from_records[name].tolist(), name
    assert from_records["spend_c"].tolist() == [b"0.5", b"2", b""]
    assert from_records["flag"].tolist() == [b"true", b"false", b"true"]


def test_a_numeric_feature_refuses_what_is_not_a_finite_number():
    schema = FeatureSchema(("device",), ("spend",))
    for value in ("soon", float("nan"), float("inf"), True, 10**400):
        with pytest.raises(EncodingError, match="finite number") as error:
            encode_records([{"spend": 1.0}, {"spend": value}], schema)
        assert error.value.field == "1.spend"


def test_times_are_read_from_datetime_strings_iso_zones_timestamps_and_epoch_numbers():
    at = 1_510_047_038_000  # 2017-11-07 09:30:38 UTC
    forms = {
        "datetime string": ["2017-11-07 09:30:38", ""],
        "no seconds, one-digit hour": ["2017-11-07 9:30", None],
        "ISO with a zone": ["2017-11-07T10:30:38+01:00", " "],
        "epoch seconds": [at / 1000, None],
        "epoch ms": [at, None],
        "epoch us": [at * 1000, None],
    }
    for form, values in forms.items():
        got = millis(pa.chunked_array([values]), name=form)
        expected = at - 38_000 if "no seconds" in form else at
        assert got[0] == expected and np.isnan(got[1]), form
    stamps = pa.chunked_array([pa.array([at, None], pa.timestamp("ms", tz="Europe/Paris"))])
    assert millis(stamps)[0] == at
    assert millis(pa.chunked_array([[38_000]]), unit="ms")[0] == 38_000


def test_an_unreadable_time_names_its_column_row_and_value():
    with pytest.raises(ValueError, match=r"column 'click_time': cannot read 'soon' \(row 1\)"):
        millis(pa.chunked_array([["2017-11-07 09:30:38", "soon"]]), name="click_time")
    with pytest.raises(ValueError, match="not times"):
        millis(pa.chunked_array([[True]]), name="flag")


def test_a_trainer_keeps_the_schema_it_started_with(tmp_path):
    first = FeatureSchema(("setup_id", "ip"), ("spend",))
    later = FeatureSchema(("setup_id", "ip", "channel"))
    with pytest.raises(NoSchema, match="rarecvr replay"):
        choose(tmp_path, None, None)
    assert choose(tmp_path, None, first) == first
    assert choose(tmp_path, None, later) == first  # kept: its checkpoints were trained on it
    message = drift_message(first, later)
    assert "adds channel" in message and "drops spend" in message
    assert "new --state-dir" in message
    assert drift_message(first, first) is None and drift_message(first, None) is None
