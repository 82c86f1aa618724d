"""Splits by series: deterministic, hash-based, written once, leak-checked."""

from __future__ import annotations

import json

import pytest

from medcad.data.splits import (
    find_leaks, hash_unit, make_splits, read_series_list, read_splits, write_splits,
)
from medcad.errors import InputError, MedcadError

LIDC_UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"
UIDS = [f"1.2.840.113654.{i}" for i in range(3000)]


def test_hash_is_pinned_so_splits_match_on_every_machine():
    # SHA-256 of "medcad-splits-v1\0<uid>", first 8 bytes / 2**64: a fixed number; 0.9047 >= 0.9 -> test
    assert hash_unit(LIDC_UID) == pytest.approx(0.9046828683780425, abs=1e-15)
    assert make_splits([LIDC_UID]).split_of(LIDC_UID) == "test"
    assert make_splits([f"1.2.840.{i}" for i in range(12)])["val"] == ("1.2.840.1",)


def test_order_and_other_series_do_not_move_a_series():
    full = make_splits(UIDS)
    shuffled = make_splits(list(reversed(UIDS)) + UIDS[:10])
    assert dict(full.splits) == dict(shuffled.splits)
    part = make_splits(UIDS[:500])
    assert all(full.split_of(uid) == part.split_of(uid) for uid in UIDS[:500])
    assert make_splits(UIDS, salt="other").splits != full.splits


def test_fractions_are_met_on_average_and_every_series_is_placed_once():
    splits = make_splits(UIDS, {"train": 0.7, "val": 0.15, "test": 0.15})
    sizes = {name: len(uids) for name, uids in splits.splits.items()}
    assert sum(sizes.values()) == len(UIDS) and not find_leaks(splits.splits)
    # binomial sd of 3000 * 0.15 is about 20; allow 4 sd
    assert abs(sizes["train"] - 2100) < 100 and abs(sizes["val"] - 450) < 80 and abs(sizes["test"] - 450) < 80


def test_groups_keep_a_patients_series_together():
    group_of = {uid: f"patient-{i // 3}" for i, uid in enumerate(UIDS[:300])}
    splits = make_splits(UIDS[:300], group_of=group_of)
    for i in range(0, 300, 3):
        assert len({splits.split_of(uid) for uid in UIDS[i:i + 3]}) == 1


def test_bad_fractions_are_refused():
    with pytest.raises(MedcadError, match="sum to 1"):
        make_splits(UIDS, {"train": 0.8, "val": 0.1})


def test_file_round_trip_and_leak_check(tmp_path):
    splits = make_splits(UIDS[:100])
    path = write_splits(splits, tmp_path / "splits.json")
    again = read_splits(path)
    assert dict(again.splits) == dict(splits.splits) and again.salt == splits.salt
    assert read_series_list(path, "val") == list(splits["val"])

    document = json.loads(path.read_text())
    document["splits"]["test"].append(document["splits"]["train"][0])
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(document))
    with pytest.raises(InputError, match=document["splits"]["train"][0]):
        read_splits(leaky)
    leaks = find_leaks(document["splits"])
    assert [(leak.series_uid, leak.splits) for leak in leaks] == [(document["splits"]["train"][0], ("train", "test"))]


def test_series_list_text_file_and_errors(tmp_path):
    listing = tmp_path / "series.txt"
    listing.write_text("# validation scans\n1.2.3\n\n1.2.4  # the second\n1.2.3\n")
    assert read_series_list(listing) == ["1.2.3", "1.2.4"]
    with pytest.raises(InputError, match="--split"):
        read_series_list(listing, "val")
    with pytest.raises(InputError, match="split"):
        read_series_list(write_splits(make_splits(UIDS[:5]), tmp_path / "s.json"))
    not_splits = tmp_path / "other.json"
    not_splits.write_text('{"format": "something"}')
    with pytest.raises(InputError, match="not a medcad splits file"):
        read_splits(not_splits)


def test_exact_splits_meet_the_counts_even_for_small_cohorts():
    uids = [f"1.2.840.{i}" for i in range(30)]
    # 30 x (0.6, 0.15, 0.25) = 18, 4.5, 7.5: the two halves go to the first splits in order with a
    # remainder (val, then test would tie; largest remainders, stable order) -> 18 / 5 / 7
    splits = make_splits(uids, {"train": 0.6, "val": 0.15, "test": 0.25}, exact=True)
    assert {k: len(v) for k, v in splits.splits.items()} == {"train": 18, "val": 5, "test": 7}
    assert make_splits(list(reversed(uids)), {"train": 0.6, "val": 0.15, "test": 0.25}, exact=True).splits == splits.splits
    # 3 scans, 70 / 15 / 15: plain rounding gives 2 / 0 / 0 + 1; every used split still gets one
    tiny = make_splits(uids[:3], {"train": 0.7, "val": 0.15, "test": 0.15}, exact=True)
    assert {k: len(v) for k, v in tiny.splits.items()} == {"train": 1, "val": 1, "test": 1}
    # groups stay together in exact mode too
    grouped = make_splits(uids, {"train": 0.5, "val": 0.5}, group_of={u: str(i // 2) for i, u in enumerate(uids)},
                          exact=True)
    assert {k: len(v) for k, v in grouped.splits.items()} == {"train": 16, "val": 14} or \
        {k: len(v) for k, v in grouped.splits.items()} == {"train": 14, "val": 16}
    for i in range(0, 30, 2):
        assert grouped.split_of(uids[i]) == grouped.split_of(uids[i + 1])
