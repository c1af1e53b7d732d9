"""The keyed state apps' per-key function (smartshelf.streaming.keyed.apply_to_key) and the keyed query's pure
parts (smartshelf.streaming.keyed_query): a group's records give the rules' state; however a key's records
are cut into batches, the state is the same; invalid, refused, mis-keyed and raising records are letters with
their reason and leave the state as it was; every key of the store's opening state belongs to its shelf's
group and that group's bucket; a bucket's records give each of its groups what that group's alone would; each app
of a group gets its own topics' records; the offsets a batch ends at come from Spark's offset log; a checkpoint
keeps its bucket count and its apps; a till's transaction goes to each shelf it sells from, narrowed to that shelf's lines,
and shelf by shelf gives the lots the whole baskets give."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from smartshelf import rules
from smartshelf.datagen import generate_store
from smartshelf.errors import SmartShelfError
from smartshelf.registry import topic
from smartshelf.schemas import (PosItem, PosTransaction, ShelfBatchState, ShelfEvent, ShelfProfile, ShelfState,
                                WarehouseBatchState, WarehouseEvent)
from smartshelf.streaming.apps import (BatchStateUpdater, ShelfAggregator, WarehouseAggregator,
                                       WarehouseBatchStateUpdater)
from smartshelf.streaming.keyed import (KeyedRecord, apply_bucket, apply_group, apply_to_key, bucket_of, narrowed,
                                        shelves_named)
from smartshelf.streaming.keyed_query import batch_ends, initial_buckets, keep_layout, opening_rows

T0 = datetime(2025, 1, 1, 9)


def shelf(stock: int = 10, shelf_id: str = "S1") -> ShelfState:
    return ShelfState(shelf_id=shelf_id, current_stock=stock, current_weight=stock * 500.0,
                      last_event_type="initial", last_event_ts=T0)


def move(n: int, kind: str = "pickup", quantity: int = 1, shelf_id: str = "S1") -> ShelfEvent:
    sign = -1 if kind == "pickup" else 1
    return ShelfEvent(event_id=f"e{n}", event_type=kind, shelf_id=shelf_id, quantity=quantity,
                      weight_change=sign * quantity * 500.0, customer_id="C1", ts=T0 + timedelta(seconds=n))


def records(values: list[BaseModel], topic_name: str = "shelf_events", first: int = 0) -> list[KeyedRecord]:
    return [KeyedRecord(topic_name, 0, first + n, value.model_dump_json().encode()) for n, value in enumerate(values)]


def test_a_groups_events_give_the_rules_state() -> None:
    events = [move(0), move(1, quantity=2), move(2, "putback"), move(3)]
    state: dict[str, BaseModel] = {"S1": shelf()}
    result = apply_to_key(ShelfAggregator(), "S1", state, records(events))
    expected = shelf()
    for event in events:
        expected, _ = rules.apply_shelf_event(expected, event)
    assert result.changed == [expected] and state == {"S1": expected} and result.letters == []


def test_records_applied_in_their_partitions_order_whatever_order_they_come_in() -> None:
    events = [move(n, "pickup" if n % 3 else "putback", quantity=1 + n % 2) for n in range(9)]
    in_order = apply_to_key(ShelfAggregator(), "S1", {"S1": shelf()}, records(events))
    shuffled = list(reversed(records(events)))
    assert apply_to_key(ShelfAggregator(), "S1", {"S1": shelf()}, shuffled).changed == in_order.changed


@pytest.mark.parametrize("cut", [1, 4, 8])
def test_however_a_keys_records_are_cut_into_batches_the_state_is_the_same(cut: int) -> None:
    events = records([move(n, "pickup" if n % 4 else "putback", quantity=1 + n % 3) for n in range(10)])
    whole: dict[str, BaseModel] = {"S1": shelf(stock=8)}
    apply_to_key(ShelfAggregator(), "S1", whole, events)
    in_two: dict[str, BaseModel] = {"S1": shelf(stock=8)}
    apply_to_key(ShelfAggregator(), "S1", in_two, events[:cut])
    apply_to_key(ShelfAggregator(), "S1", in_two, events[cut:])
    assert in_two == whole


def test_bad_records_are_letters_and_leave_the_state_as_it_was() -> None:
    state: dict[str, BaseModel] = {"S1": shelf(stock=1)}
    wrong_key = move(2, shelf_id="S2")
    batch = [KeyedRecord("shelf_events", 0, 0, b"not json"), *records([move(1, quantity=3)], first=1),
             *records([wrong_key], first=2)]
    result = apply_to_key(ShelfAggregator(), "S1", state, batch)
    reasons = {record.offset: reason for record, reason in result.letters}
    assert "not JSON" in reasons[0]
    assert reasons[1] == "pickup of 3 exceeds the stock by 2; stock set to 0"  # applied, and reported
    assert reasons[2] == "record key 'S1' is not the key its fields name ('S2')"
    assert result.letters[0][0].value == b"not json"  # a letter carries the record as it came
    assert state["S1"].current_stock == 0  # type: ignore[attr-defined]


def test_an_app_reports_the_invalid_records_of_its_own_topics_only() -> None:
    """wh_events is validated by wh-aggregator: wh-batch-state-updater, reading it too, reports nothing."""
    garbage = [KeyedRecord("wh_events", 0, 0, b"{}")]
    assert len(apply_to_key(WarehouseAggregator(), "S1", {}, garbage).letters) == 1
    assert apply_to_key(WarehouseBatchStateUpdater(), "S1", {}, garbage).letters == []


class Exploding(ShelfAggregator):
    def step(self, state: dict[str, BaseModel], event: BaseModel) -> tuple[str, BaseModel | None, str | None]:
        if isinstance(event, ShelfEvent) and event.event_id == "e1":
            raise ValueError("boom")
        return super().step(state, event)


def test_a_record_whose_rule_raises_is_a_letter_and_the_rest_are_applied() -> None:
    state: dict[str, BaseModel] = {"S1": shelf()}
    result = apply_to_key(Exploding(), "S1", state, records([move(0), move(1), move(2)]))
    assert [(record.offset, reason) for record, reason in result.letters] == [
        (1, "shelf-aggregator could not apply it: ValueError: boom")]
    assert state["S1"].current_stock == 8  # type: ignore[attr-defined]


def test_a_profile_adds_its_shelf_before_the_batchs_events_on_it() -> None:
    profile = ShelfProfile(shelf_id="NEW", aisle=1, item_category="BEVERAGES", item_subcategory="Water",
                           item_weight=500, shelf_weight=5000, maximum_stock=10, item_price=2.0)
    batch = [*records([move(0, "putback", 4, shelf_id="NEW")]), *records([profile], "shelf_profiles")]
    state: dict[str, BaseModel] = {}
    result = apply_to_key(ShelfAggregator(), "NEW", state, batch)
    assert result.letters == [] and state["NEW"].current_stock == 4  # type: ignore[attr-defined]


def test_a_shelfs_lots_are_one_groups_state() -> None:
    lot = dict(shelf_id="S1", received_date=date(2025, 1, 1), expiry_date=date(2025, 2, 1), ts=T0)
    events = [WarehouseEvent(event_id="w1", event_type="wh_in", batch_code="L1", quantity=10, **lot),
              WarehouseEvent(event_id="w2", event_type="wh_in", batch_code="L2", quantity=5, **lot),
              WarehouseEvent(event_id="w3", event_type="wh_out", batch_code="L1", quantity=4, **lot),
              WarehouseEvent(event_id="w4", event_type="wh_out", batch_code="L9", quantity=1, **lot)]
    state: dict[str, BaseModel] = {}
    result = apply_to_key(WarehouseBatchStateUpdater(), "S1", state, records(events, "wh_events"))
    assert {k: v.batch_quantity_warehouse for k, v in state.items() if isinstance(v, WarehouseBatchState)} == {
        "S1|L1": 6, "S1|L2": 5}
    assert [WarehouseBatchStateUpdater.key_of(v) for v in result.changed] == ["S1|L1", "S1|L2"]
    assert [reason for _, reason in result.letters] == ["wh_out from unknown lot S1|L9"]


def test_every_opening_key_belongs_to_its_shelfs_group() -> None:
    store = generate_store(7)
    apps = [ShelfAggregator(), WarehouseAggregator(), WarehouseBatchStateUpdater()]
    rows = opening_rows(apps, {store.store_id: store}, T0)
    initial = rules.initial_states(store, T0)
    assert len(rows) == len(initial.shelves) + len(initial.warehouse) + len(initial.wh_lots)
    for app_name, store_id, group, state_key, value in rows:
        assert state_key.split("|")[0] == group and json.loads(value)["shelf_id"] == group, (app_name, state_key)
        assert json.loads(value)["store_id"] == store_id
    buckets = {bucket: groups for _, bucket, groups, _ in initial_buckets(rows, 16)}  # each shelf in its bucket,
    # each app's keys in its shelf's state
    assert {shelf_id for groups in buckets.values() for shelf_id in json.loads(groups)} == \
        {s.shelf_id for s in initial.shelves}
    assert all(bucket_of(shelf_id, 16) == bucket
               for bucket, groups in buckets.items() for shelf_id in json.loads(groups))
    assert len(buckets) == 16  # a store's shelves fill every bucket
    first = initial.wh_lots[0]
    stored = json.loads(buckets[bucket_of(first.shelf_id, 16)])[first.shelf_id]
    assert stored["wh-batch-state-updater"][f"{first.shelf_id}|{first.batch_code}"] == first.model_dump_json()


def test_a_groups_bucket_is_sparks_crc32_of_its_key_modulo_the_count() -> None:
    # Spark 4.2 SQL: crc32(cast('S1' AS binary)) -> 2173770834, pmod(that, 64) -> 18; crc32 of '' -> 0; and
    # crc32(cast('SCAFFALE-0001|LOT-é' AS binary)) -> 3795268915 (UTF-8 bytes)
    assert bucket_of("S1", 64) == 2173770834 % 64 == 18 and bucket_of("", 64) == 0
    assert bucket_of("SCAFFALE-0001|LOT-é", 2**16) == 3795268915 % 2**16
    assert {bucket_of(f"S{n}", 8) for n in range(100)} == set(range(8))


def test_a_buckets_records_give_each_group_what_its_own_records_would() -> None:
    apps = [ShelfAggregator()]
    mixed = [("S1", r) for r in records([move(0), move(1)])] + \
            [("S2", r) for r in records([move(2, shelf_id="S2"), move(3, "putback", shelf_id="S2")], first=2)] + \
            [("S2", KeyedRecord("shelf_events", 0, 9, b"not json"))]
    start = {g: {"shelf-aggregator": {g: shelf(shelf_id=g).model_dump_json()}} for g in ("S1", "S2", "S3")}
    groups = json.loads(json.dumps(start))
    changed, out = apply_bucket(apps, groups, reversed(mixed))
    alone = {g: apply_group(apps, g, json.loads(json.dumps(start[g])), [r for h, r in mixed if h == g])
             for g in ("S1", "S2")}
    assert changed and groups == {"S1": alone["S1"][0], "S2": alone["S2"][0], "S3": start["S3"]}
    assert out == alone["S1"][1] + alone["S2"][1] and out[-1][1] == "letter"
    letters_only = json.loads(json.dumps(start))
    assert apply_bucket(apps, letters_only, [("S3", KeyedRecord("shelf_events", 0, 10, b"{}"))])[0] is False
    assert letters_only == start  # nothing to write back


def test_a_checkpoint_keeps_its_bucket_count_its_apps_and_its_stores(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "smartshelf-keyed"
    apps, stores = ["shelf-aggregator", "removal-scheduler"], ["store-001", "store-002"]
    keep_layout(checkpoint, 64, apps, stores)
    keep_layout(checkpoint, 64, apps, stores)  # the same again: fine
    with pytest.raises(SmartShelfError, match="KEYED_BUCKETS=32, but .* 64 buckets"):
        keep_layout(checkpoint, 32, apps, stores)
    with pytest.raises(SmartShelfError, match="keeps the state of the apps shelf-aggregator,removal-scheduler, not"):
        keep_layout(checkpoint, 64, ["shelf-aggregator"], stores)
    with pytest.raises(SmartShelfError, match="keeps the state of the stores store-001,store-002, not of store-001"):
        keep_layout(checkpoint, 64, apps, ["store-001"])
    (checkpoint.with_name("smartshelf-keyed.buckets")).write_text(f"64\n{','.join(apps)}\n")  # before chains
    with pytest.raises(SmartShelfError, match="one store of an earlier version"):
        keep_layout(checkpoint, 64, apps, stores)
    (checkpoint.with_name("smartshelf-keyed.buckets")).write_text("64\n")  # an earlier version's marker
    with pytest.raises(SmartShelfError, match="the apps of an earlier version"):
        keep_layout(checkpoint, 64, ["shelf-aggregator"], stores)
    older = tmp_path / "older" / "checkpoints" / "smartshelf-keyed"
    (older / "commits").mkdir(parents=True)
    (older / "commits" / "0").write_text("v1\n")
    with pytest.raises(SmartShelfError, match="made before its state was bucketed"):
        keep_layout(older, 64, ["shelf-aggregator"], ["store-001"])


def test_a_batch_ends_where_sparks_offset_log_says(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    (tmp_path / "offsets" / "3").write_text('v1\n{"batchWatermarkMs":0,"batchTimestampMs":1}\n'
                                            '{"shelf_events":{"1":7,"0":12},"shelf_profiles":{"0":0}}\n')
    assert batch_ends(tmp_path, 3) == {("shelf_events", 0): 12, ("shelf_events", 1): 7, ("shelf_profiles", 0): 0}


def test_each_app_of_a_group_gets_its_own_topics_records() -> None:
    apps = [ShelfAggregator(), WarehouseAggregator(), WarehouseBatchStateUpdater()]
    delivery = WarehouseEvent(event_id="w1", event_type="wh_in", shelf_id="S1", batch_code="L1", quantity=10,
                              received_date=date(2025, 1, 1), expiry_date=date(2025, 2, 1), ts=T0)
    start = {"wh-aggregator": {"S1": json.dumps({"shelf_id": "S1", "wh_current_stock": 2, "last_event_type": "initial",
                                                  "last_event_ts": T0.isoformat()})}}
    texts, out = apply_group(apps, "S1", start, records([delivery], "wh_events"))
    assert [(row[0], row[1], row[5]) for row in out] == [("wh-aggregator", "state", "store-001|S1"),
                                                        ("wh-batch-state-updater", "state", "store-001|S1|L1")]
    assert json.loads(texts["wh-aggregator"]["S1"])["wh_current_stock"] == 12 and "shelf-aggregator" not in texts


def sale(n: int, lines: list[tuple[str, int]]) -> PosTransaction:
    return PosTransaction(transaction_id=f"t{n}", customer_id="C1", ts=T0 + timedelta(minutes=n), total=1.0,
                          items=[PosItem(shelf_id=shelf_id, quantity=quantity, unit_price=1.0, discount=0.0,
                                         line_total=1.0) for shelf_id, quantity in lines])


def test_a_transaction_goes_to_each_shelf_it_names_once_narrowed_to_that_shelfs_lines() -> None:
    basket = sale(0, [("S2", 1), ("S1", 2), ("S2", 3)])
    assert shelves_named(topic("pos_transactions"), basket) == ["S1", "S2"]
    assert [(line.shelf_id, line.quantity) for line in narrowed(basket, "S2").items] == [("S2", 1), ("S2", 3)]  # type: ignore[attr-defined]
    assert shelves_named(topic("shelf_events"), move(0, shelf_id="S9")) == ["S9"]


def test_baskets_applied_shelf_by_shelf_give_the_lots_of_the_whole_baskets_in_till_order() -> None:
    """A shelf's lots change only by its own lines, so the groups give what the batch-state-updater over whole
    baskets gives, shortfalls (to dead_letters) included."""
    store = generate_store(11)
    opening = rules.initial_states(store, T0).shelf_lots
    shelves = sorted({lot.shelf_id for lot in opening})[:6]
    baskets = [sale(n, [(shelves[(n * 7 + k) % 6], 1 + (n + k) % 5) for k in range(1 + n % 4)]) for n in range(60)]
    whole: dict[str, list[ShelfBatchState]] = {}
    for lot in opening:
        whole.setdefault(lot.shelf_id, []).append(lot)
    shortfalls = []
    for basket in baskets:
        shortfalls += [(basket.transaction_id, short.key) for short in rules.apply_sale(whole, basket)[1]]
    app = BatchStateUpdater()
    key = app.key_of
    by_group, letters = {}, []
    for group in shelves:
        state: dict[str, BaseModel] = {key(lot): lot for lot in opening if lot.shelf_id == group}
        mine = [r for r, basket in zip(records(baskets, "pos_transactions"), baskets, strict=True)
                if group in shelves_named(topic("pos_transactions"), basket)]  # as the query groups them
        result = apply_to_key(app, group, state, mine)
        by_group |= state
        letters += [(baskets[record.offset].transaction_id, group) for record, _ in result.letters]
    assert by_group == {key(lot): lot for shelf_id in shelves for lot in whole[shelf_id]}
    assert shortfalls and sorted(letters) == sorted(shortfalls)


def test_an_invalid_transaction_is_reported_by_one_of_its_groups_only() -> None:
    garbage = KeyedRecord("pos_transactions", 0, 5, b'{"items": [{"shelf_id": "S1"}, {"shelf_id": "S2"}]}')
    second = KeyedRecord("pos_transactions", 0, 5, garbage.value, reports=False)
    assert len(apply_to_key(BatchStateUpdater(), "S1", {}, [garbage]).letters) == 1
    assert apply_to_key(BatchStateUpdater(), "S2", {}, [second]).letters == []
