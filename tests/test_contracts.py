"""Event contracts: every event round-trips, and a malformed one names its bad field."""

import pytest

from rarecvr.contracts import (
    Click,
    ContractError,
    Conversion,
    CvrDelta,
    DeadLetter,
    LabeledExample,
    ModelUpdate,
    TaskAssignment,
    decode,
    encode,
)

EXAMPLES = [
    Click(
        event_id="c1",
        ts_ms=1_700_000_000_000,
        setup_id="s1",
        advertiser_id="a1",
        features={"device": "ios", "hour": 13, "recency_days": 2.5},
        true_p=0.004,
    ),
    Conversion(event_id="v1", click_id="c1", setup_id="s1", ts_ms=1_700_000_360_000),
    LabeledExample(
        click_id="c1",
        setup_id="s1",
        advertiser_id="a1",
        features={"device": "ios"},
        label=1,
        click_ts_ms=1_700_000_000_000,
        conversion_ts_ms=1_700_000_360_000,
    ),
    TaskAssignment(
        setup_id="s1",
        task="hard",
        epoch=3,
        reason="posterior below threshold",
        evidence={"clicks": 1200.5, "conversions": 3.2, "p_below": 0.993},
        valid_from_ms=1_700_000_000_000,
    ),
    CvrDelta(setup_id="s1", kind="conversion", ts_ms=5, delay_ms=3, source="clicks:0", offset=9),
    ModelUpdate(
        action="publish",
        version=7,
        path="/registry/7",
        manifest_sha256="ab" * 32,
        created_ms=1_700_000_000_000,
    ),
    DeadLetter(
        topic="rarecvr.clicks",
        partition=0,
        offset=12,
        reason="click.ts_ms",
        detail="Input should be a valid integer",
        raw_b64="e30=",
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_every_event_round_trips_through_json(event):
    assert decode(type(event), encode(event)) == event


VALID_CLICK = (
    b'{"v":1,"event_id":"c1","ts_ms":5,"setup_id":"s1","advertiser_id":"a1","features":{}}'
)


@pytest.mark.parametrize(
    ("raw", "field", "problem"),
    [
        (b"not json", "", "not valid JSON"),
        (b"[1, 2]", "", "not a JSON object"),
        (VALID_CLICK.replace(b'"ts_ms":5', b'"ts_ms":"5"'), "ts_ms", "valid integer"),
        (VALID_CLICK.replace(b'"ts_ms":5', b'"ts_ms":-1'), "ts_ms", "greater than or equal"),
        (VALID_CLICK.replace(b'"event_id":"c1",', b""), "event_id", "Field required"),
        (VALID_CLICK.replace(b'"setup_id":"s1"', b'"setup_id":""'), "setup_id", "at least 1"),
        (VALID_CLICK.replace(b'"v":1', b'"v":2'), "v", "Input should be 1"),
        (VALID_CLICK.replace(b"{}", b'{"x":[1]}'), "features.x", "valid string"),
        (VALID_CLICK.replace(b"{}", b'{"x":NaN}'), "features.x", "finite number"),
        (VALID_CLICK.replace(b"{}", b'{"x":Infinity}'), "features.x", "finite number"),
        (VALID_CLICK.replace(b"}}", b'},"extra":1}'), "extra", "Extra inputs"),
    ],
)
def test_malformed_click_raises_error_naming_the_field(raw, field, problem):
    with pytest.raises(ContractError) as caught:
        decode(Click, raw)
    assert caught.value.event == "click"
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert caught.value.reason == (f"click.{field}" if field else "click.<event>")
    assert caught.value.metric_label == "click." + (field.split(".")[0] if field else "<event>")


def test_union_feature_error_lists_every_accepted_type():
    with pytest.raises(ContractError) as caught:
        decode(Click, VALID_CLICK.replace(b"{}", b'{"x":null}'))
    assert "valid string" in caught.value.problem and "valid integer" in caught.value.problem


def test_labels_other_than_zero_and_one_are_refused():
    raw = encode(EXAMPLES[2]).replace(b'"label":1', b'"label":2')
    with pytest.raises(ContractError, match=r"labeled_example\.label"):
        decode(LabeledExample, raw)


def test_assignment_task_must_be_hard_or_soft():
    raw = encode(EXAMPLES[3]).replace(b'"hard"', b'"medium"')
    with pytest.raises(ContractError, match=r"task_assignment\.task"):
        decode(TaskAssignment, raw)


def test_peek_checks_each_line_of_a_batched_record_and_names_the_bad_one():
    from types import SimpleNamespace

    from rarecvr.peek import validate
    from rarecvr.topics import LABELED_EXAMPLES

    good = (
        b'{"click_id": "c1", "setup_id": "s1", "advertiser_id": "a1", "features": {},'
        b' "label": 0, "click_ts_ms": 5}'
    )
    record = SimpleNamespace(offset=7, value=b"\n".join([good, good.replace(b"0,", b"2,"), good]))

    checked = validate(LABELED_EXAMPLES, 3, record)

    assert [(c.partition, c.offset, c.error is None) for c in checked] == [
        (3, 7, True),
        (3, 7, False),
        (3, 7, True),
    ]
    assert checked[1].error.reason == "labeled_example.label"
