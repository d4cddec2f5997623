"""Versioned event contracts: what every topic carries, validated at the edges.

Each event is a JSON object with a schema version ``v``. Decoding checks types, ranges and
required fields; a malformed event raises :class:`ContractError`, which names the event type, the
field and the problem, so that a dead letter says exactly what was wrong.

>>> click = Click(event_id="c1", ts_ms=1_700_000_000_000, setup_id="s1", advertiser_id="a1",
...               features={"device": "ios", "hour": 13})
>>> decode(Click, encode(click)) == click
True
>>> decode(Click, b'{"v": 1, "event_id": "c1", "ts_ms": -5, "setup_id": "s1", '
...               b'"advertiser_id": "a1", "features": {}}')
Traceback (most recent call last):
...
rarecvr.contracts.ContractError: click.ts_ms: Input should be greater than or equal to 0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

Id = Annotated[str, Field(min_length=1, max_length=256)]
#: Event time in milliseconds since the Unix epoch (UTC).
TimestampMs = Annotated[int, Field(ge=0, lt=10**14)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
#: A feature's value; a float must be finite (NaN and Infinity are not JSON, and a model cannot
#: learn from them), so a click carrying one is a dead letter at the edge.
FeatureValue = StrictStr | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
Task = Literal["hard", "soft"]


class ContractError(ValueError):
    """An event broke its contract. ``field`` is a dotted path ('' when the whole event is bad)."""

    def __init__(self, event: str, field: str, problem: str):
        self.event, self.field, self.problem = event, field, problem
        super().__init__(f"{event}.{field}: {problem}" if field else f"{event}: {problem}")

    @property
    def reason(self) -> str:
        """A short, stable label for counting dead letters: ``event.field``."""
        return f"{self.event}.{self.field}" if self.field else f"{self.event}.<event>"

    @property
    def metric_label(self) -> str:
        """The reason cut to its event and top-level field (``click.features``), so that a
        metric labelled by it stays bounded whatever feature names events carry."""
        return self.reason.split(".", 2)[0] + "." + self.reason.split(".", 2)[1]


class Event(BaseModel):
    """Base of every contract: strict, immutable, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    event_type: ClassVar[str] = "event"  #: the event type named in errors


class Click(Event):
    """A click on an ad: the unit that a conversion is attributed to and a model scores."""

    event_type: ClassVar[str] = "click"
    v: Literal[1] = 1
    event_id: Id
    ts_ms: TimestampMs
    setup_id: Id
    advertiser_id: Id
    features: dict[Annotated[str, Field(min_length=1, max_length=64)], FeatureValue]
    true_p: Probability | None = None


class Conversion(Event):
    """A conversion reported by an advertiser, naming the click it follows."""

    event_type: ClassVar[str] = "conversion"
    v: Literal[1] = 1
    event_id: Id
    click_id: Id
    setup_id: Id
    ts_ms: TimestampMs


class LabeledExample(Event):
    """A click whose label is final: converted within the window (1) or the window closed (0)."""

    event_type: ClassVar[str] = "labeled_example"
    v: Literal[1] = 1
    click_id: Id
    setup_id: Id
    advertiser_id: Id
    features: dict[Annotated[str, Field(min_length=1, max_length=64)], FeatureValue]
    label: Literal[0, 1]
    click_ts_ms: TimestampMs
    conversion_ts_ms: TimestampMs | None = None
    true_p: Probability | None = None


class CvrDelta(Event):
    """A click or an attributed conversion counted towards its setup's historical CVR.

    ``source`` and ``offset`` name the record that caused it, so that a replay is recognised.
    """

    event_type: ClassVar[str] = "cvr_delta"
    v: Literal[1] = 1
    setup_id: Id
    kind: Literal["click", "conversion"]
    ts_ms: TimestampMs
    delay_ms: Annotated[int, Field(ge=0)] = 0
    source: Id
    offset: Annotated[int, Field(ge=0)]
    #: The setup's peer group (advertiser type / conversion category tags), on clicks.
    group: Annotated[str, Field(max_length=256)] = ""


class TaskAssignment(Event):
    """The task of one setup from ``valid_from_ms`` on; ``epoch`` grows with every change."""

    event_type: ClassVar[str] = "task_assignment"
    v: Literal[1] = 1
    setup_id: Id
    task: Task
    epoch: Annotated[int, Field(ge=0)]
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    evidence: dict[str, StrictFloat | StrictInt | StrictStr]
    valid_from_ms: TimestampMs


class ModelUpdate(Event):
    """A change in the model registry that replicas must follow."""

    event_type: ClassVar[str] = "model_update"
    v: Literal[1] = 1
    action: Literal["publish", "pin", "unpin", "rollback"]
    version: Annotated[int, Field(ge=1)]
    path: Id
    manifest_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    created_ms: TimestampMs


FeatureName = Annotated[str, Field(min_length=1, max_length=64)]


class FeatureSchemaRecord(Event):
    """The features of the click stream, each categorical or numeric (``rarecvr.schema``):
    published by whatever produces the clicks, read by the trainer."""

    event_type: ClassVar[str] = "feature_schema"
    v: Literal[1] = 1
    categorical: Annotated[list[FeatureName], Field(min_length=1)]
    numeric: list[FeatureName] = []
    source: Annotated[str, Field(max_length=1024)]  #: who published it: a log's path, ...
    published_ms: TimestampMs


class DeadLetter(Event):
    """An event that could not be processed, with its raw bytes (base64) and why."""

    event_type: ClassVar[str] = "dead_letter"
    v: Literal[1] = 1
    topic: Id
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    #: The event's line in its record (0 for a record of one event).
    line: Annotated[int, Field(ge=0)] = 0
    reason: Annotated[str, Field(min_length=1)]
    detail: str
    raw_b64: str


E = TypeVar("E", bound=Event)


def decode(contract: type[E], raw: bytes | str) -> E:
    """Parse and validate one event, or raise :class:`ContractError` naming the bad field."""
    try:
        return contract.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        if first["type"] == "json_invalid":
            error = first.get("ctx", {}).get("error", first["msg"])
            raise ContractError(contract.event_type, "", f"not valid JSON ({error})") from None
        if first["type"] == "model_type":
            raise ContractError(contract.event_type, "", "not a JSON object") from None
        field = _field_path(first["loc"])
        # A union reports one error per member type: say them together.
        problems = dict.fromkeys(e["msg"] for e in errors if _field_path(e["loc"]) == field)
        raise ContractError(contract.event_type, field, " or ".join(problems)) from None


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _field_path(loc: tuple) -> str:
    """The dotted field path of a pydantic error location, without union member tags."""
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p in _TYPE_TAGS))


def encode(event: Event) -> bytes:
    """Serialise an event to compact JSON bytes."""
    return event.model_dump_json().encode()


#: The most bytes of events one record of a batched topic holds (Kafka refuses records over
#: about 1 MB; a single larger event still goes alone).
RECORD_BYTES = 256 * 1024


def join_lines(events: Iterable[bytes], max_bytes: int = RECORD_BYTES) -> Iterator[bytes]:
    """Encoded events as the records of a batched topic (``Topic.batched``): one JSON object a
    line, as many lines a record as fit in ``max_bytes``. A consumer then pays for one Kafka
    record per batch instead of per event.

    >>> list(join_lines([b'{"a":1}', b'{"a":2}', b'{"a":3}'], max_bytes=16))
    [b'{"a":1}\\n{"a":2}', b'{"a":3}']
    """
    lines: list[bytes] = []
    size = 0
    for event in events:
        if lines and size + 1 + len(event) > max_bytes:
            yield b"\n".join(lines)
            lines, size = [], 0
        size += len(event) + bool(lines)
        lines.append(event)
    if lines:
        yield b"\n".join(lines)


def split_lines(raw: bytes) -> list[bytes]:
    """The events of a record of a batched topic: its lines that are not blank.

    >>> split_lines(b'{"a":1}\\n{"a":2}\\n')
    [b'{"a":1}', b'{"a":2}']
    """
    return [line for line in raw.split(b"\n") if line.strip()]


#: Click features whose values name a setup's peers: the stabilizer's prior comes from them.
PEER_TAGS = ("advertiser_type", "category")


def peer_group(features: dict) -> str:
    """The peer group of a click's setup, from its (possibly wrong) advertiser tags.

    >>> peer_group({"advertiser_type": "retail", "category": "purchase", "hour": 3})
    'retail/purchase'
    """
    return "/".join(str(features.get(tag, "")) for tag in PEER_TAGS)
