"""Labeled examples parsed in bulk: the same columns as the replicas' per-request path, and every
malformed record named with its reason."""

from __future__ import annotations

import json

import numpy as np

from rarecvr.contracts import split_lines
from rarecvr.schema import FeatureSchema, encode_records
from simulator import Marketplace, SimConfig
from simulator.labels import labeled_examples
from simulator.tables import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from trainer.examples import Examples, parse

SPEC = FeatureSchema(CATEGORICAL_FEATURES, NUMERIC_FEATURES)


def simulated_values(clicks: int = 3000) -> list[bytes]:
    """One example a record (the worker sends many a record: ``test_records_of_many_...``)."""
    records = labeled_examples(Marketplace(SimConfig(clicks=clicks, days=1.0)))
    return [line for r in records for line in split_lines(r.value)]


def assert_same(a: Examples, b: Examples) -> None:
    assert a.inputs.keys() == b.inputs.keys() and a.meta.keys() == b.meta.keys()
    for name in a.inputs:
        assert a.inputs[name].tolist() == b.inputs[name].tolist(), name
    for name in a.meta:
        np.testing.assert_array_equal(a.meta[name], b.meta[name], err_msg=name)


def test_a_fetch_parsed_in_bulk_gives_the_inputs_the_replicas_would_hash():
    values = simulated_values()
    block, records, bad = parse(values, SPEC)
    examples = [json.loads(v) for v in values]

    assert bad == [] and len(block) == len(values) and records.tolist() == list(range(len(values)))
    assert_same(block, Examples.from_dicts(examples, SPEC))
    records = [
        e["features"] | {"setup_id": e["setup_id"], "advertiser_id": e["advertiser_id"]}
        for e in examples
    ]
    served = encode_records(records, SPEC)
    assert all(block.inputs[k].tolist() == served[k].tolist() for k in SPEC.names)
    assert block.inputs["hour"].dtype == object and block.inputs["hour"][0].isdigit()


def test_malformed_records_are_named_and_the_rest_parse_as_without_them():
    values = simulated_values(1000)
    good = json.loads(values[0])
    broken = {
        3: b"not json",
        7: b'["an", "array"]',
        11: json.dumps({k: v for k, v in good.items() if k != "label"}).encode(),
        13: json.dumps(good | {"label": 2}).encode(),
        17: json.dumps(good | {"features": good["features"] | {"recency_days": "soon"}}).encode(),
        19: b"",
    }
    mixed = [broken.get(i, v) for i, v in enumerate(values)]

    block, records, bad = parse(mixed, SPEC)

    assert [(i, reason) for i, _, reason, _ in bad] == [
        (3, "not_json"),
        (7, "not_json"),
        (11, "labeled_example.label"),
        (13, "labeled_example.label"),
        (17, "labeled_example.features.recency_days"),
        (19, "not_json"),
    ]
    assert "got 2" in bad[3][3] and bad[0][1] == b"not json"
    assert records.tolist() == [i for i in range(len(values)) if i not in broken]
    clean, _, _ = parse([v for i, v in enumerate(values) if i not in broken], SPEC)
    assert_same(block, clean)


def test_a_feature_whose_type_changes_between_records_parses_as_each_record_says():
    values = simulated_values(1000)[:50]
    first = json.loads(values[0])
    values[5] = json.dumps(first | {"features": first["features"] | {"hour": "late"}}).encode()
    values[6] = json.dumps(first | {"features": first["features"] | {"hour": 2.0}}).encode()

    block, _, bad = parse(values, SPEC)

    assert bad == [] and len(block) == 50
    # 2.0 is written "2", as a table's cast and a replica write it (`rarecvr.schema.word`)
    assert block.inputs["hour"][5] == b"late" and block.inputs["hour"][6] == b"2"


def test_records_of_many_examples_parse_as_their_lines_one_by_one():
    """As the worker sends them: each record a step's labels of one partition, a line each."""
    records = [r.value for r in labeled_examples(Marketplace(SimConfig(clicks=3000, days=1.0)))]
    lines = [split_lines(value) for value in records]
    assert len(records) < sum(map(len, lines)) / 10  # many examples a record

    block, rows, bad = parse(records, SPEC)
    one_by_one, _, _ = parse([line for group in lines for line in group], SPEC)

    assert bad == []
    assert_same(block, one_by_one)
    assert rows.tolist() == [i for i, group in enumerate(lines) for _ in group]


def test_a_bad_line_is_named_with_its_record_and_the_other_lines_of_the_record_are_kept():
    records = [r.value for r in labeled_examples(Marketplace(SimConfig(clicks=2000, days=1.0)))]
    lines = [split_lines(value) for value in records]
    broken = b'{"click_id": "c-missing-its-label"}'
    mixed = list(records)
    mixed[1] = b"\n".join([lines[1][0], broken, *lines[1][1:]])

    block, rows, bad = parse(mixed, SPEC)
    clean, _, _ = parse(records, SPEC)

    assert [(i, line) for i, line, _, _ in bad] == [(1, broken)]
    assert_same(block, clean)
    assert rows.tolist() == [i for i, group in enumerate(lines) for _ in group]
