"""The DCT reader reproduces the release's sampling (docs/release.md §4) on small hand-built databases.

Shuffle outcomes quoted below are what ``random.seed(27)`` + ``random.shuffle`` give (the release's calls):
  a fresh generator leaves 1, 2, 3 and 4 rows in order and turns 5 rows [0,1,2,3,4] into [4,0,1,2,3];
  after a 3-row shuffle, a 4-row shuffle gives [3,0,1,2];
  after a 1-row and a 5-row shuffle, a 2-row shuffle gives [1,0].
"""
import random
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from common.errors import DatasetError
from dataset.dct import ROWS_QUERY, DctSource, class_quota, connect_read_only
from dataset.task import TaskInfo
from tests.helpers import SPLIT_FOLDER, TEST, TRAIN, VAL, image, write_database

TOY = TaskInfo(order=0, task_id=1, name="toy")


def images(class_id: int, count: int, split: int = TRAIN, start: int = 0) -> list[tuple]:
    return [image(class_id, index, split) for index in range(start, start + count)]


def sample(root: Path, files: list[tuple], task: TaskInfo = TOY):
    write_database(root, files)
    return DctSource(root, [task]).sample(task)


def item(split: int, name: str, label: int) -> tuple[str, int]:
    return f"original_images/toy/{SPLIT_FOLDER[split]}/{name}.jpg", label


def per_label_counts(items) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _path, label in items:
        counts[label] = counts.get(label, 0) + 1
    return counts


def test_first_appearance_labels_interleaved_rows_and_excluded_rows(tmp_path):
    files = [
        image(7, 0), image(3, 0), image(7, 99, problem=1), image(7, 1), image(9, 5, split=TEST), image(9, 0),
        image(3, 1), image(3, 50, dataset_id=2), image(7, 2), image(3, 2), image(3, 3),
        image(9, 0, VAL), image(3, 0, VAL), image(7, 0, VAL), image(3, 1, VAL), image(3, 2, VAL),
        image(3, 9, VAL, problem=1), image(3, 3, VAL), image(3, 4, VAL), image(7, 1, VAL), image(5, 0, TEST),
    ]
    result = sample(tmp_path, files)
    assert result.classes == ("7", "3", "9")  # first appearance, not sorted
    # quota round(2560/3) = 853 exceeds every class: all rows, in shuffled order; 7 has 3 rows (kept in order),
    # then 3 has 4 rows ([3,0,1,2]): the generator runs on across classes instead of re-seeding per class.
    assert result.train == (
        item(TRAIN, "7_0", 0), item(TRAIN, "7_1", 0), item(TRAIN, "7_2", 0),
        item(TRAIN, "3_3", 1), item(TRAIN, "3_0", 1), item(TRAIN, "3_1", 1), item(TRAIN, "3_2", 1),
        item(TRAIN, "9_0", 2),
    )
    # Validation re-seeds, keeps its own class order (9, 3, 7) and uses the train labels.
    assert result.val == (
        item(VAL, "9_0", 2),
        item(VAL, "3_4", 1), item(VAL, "3_0", 1), item(VAL, "3_1", 1), item(VAL, "3_2", 1), item(VAL, "3_3", 1),
        item(VAL, "7_1", 0), item(VAL, "7_0", 0),
    )


def test_string_class_ids_are_kept_as_class_keys(tmp_path):
    files = [("h1", "/a/", "x.png", "cat", 1, 0, TRAIN), ("h2", "/a/", "y.png", "dog", 1, 0, TRAIN),
             ("h3", "/b/", "z.png", "dog", 1, 0, VAL)]
    result = sample(tmp_path, files)
    assert result.classes == ("cat", "dog")
    assert result.train == (("original_images/toy/a/x.png", 0), ("original_images/toy/a/y.png", 1))
    assert result.val == (("original_images/toy/b/z.png", 1),)


@pytest.mark.parametrize("num_classes, train_quota, val_quota", [
    (59, 43, 4),  # < 60 classes: round(2560/59 = 43.39) = 43, round(256/59 = 4.34) = 4
    (60, 85, 9),  # >= 60 classes: round(5120/60 = 85.33) = 85, round(512/60 = 8.53) = 9
])
def test_amounts_quota_truncated_and_short_classes(tmp_path, num_classes, train_quota, val_quota):
    """Class 0 holds more rows than the quota (truncated); every other class holds one (short)."""
    train = images(0, 100) + [row for class_id in range(1, num_classes) for row in images(class_id, 1)]
    val = images(0, 20, VAL) + [row for class_id in range(1, num_classes) for row in images(class_id, 1, VAL)]
    result = sample(tmp_path, train + val)
    assert per_label_counts(result.train) == {0: train_quota} | {label: 1 for label in range(1, num_classes)}
    assert per_label_counts(result.val) == {0: val_quota} | {label: 1 for label in range(1, num_classes)}
    assert len(set(result.train)) == train_quota + num_classes - 1  # no row taken twice


def test_truncated_class_takes_the_first_quota_rows_after_shuffling(tmp_path):
    """114 classes: validation quota round(512/114 = 4.49) = 4; the 5-row class shuffles to [4,0,1,2,3]."""
    train = [row for class_id in range(114) for row in images(class_id, 1)]
    val = images(0, 5, VAL) + [row for class_id in range(1, 114) for row in images(class_id, 1, VAL)]
    result = sample(tmp_path, train + val)
    assert result.val[:5] == (item(VAL, "0_4", 0), item(VAL, "0_0", 0), item(VAL, "0_1", 0), item(VAL, "0_2", 0),
                              item(VAL, "1_0", 1))
    assert len(result.val) == 4 + 113


def test_quota_rounds_half_to_even():
    """Python's round, as the release: no real amount/class count lands on .5, but the rule is the release's."""
    assert class_quota(10, 4) == 2  # 2.5 -> 2
    assert class_quota(14, 4) == 4  # 3.5 -> 4
    assert class_quota(2560, 7) == 366  # 365.71
    assert class_quota(256, 3) == 85  # 85.33


def test_300_class_cap(tmp_path):
    """320 train classes: the first 300 are the task; validation skips classes outside them without shuffling."""
    train = images(1000, 20) + [row for class_id in range(1001, 1320) for row in images(class_id, 1)]
    val = (images(1310, 3, VAL)  # train label 310: skipped, and not shuffled
           + images(1000, 5, VAL)  # label 0, quota 2: a fresh shuffle gives [4,0,1,2,3]
           + [row for class_id in range(1001, 1300) for row in images(class_id, 1, VAL)]
           + [row for class_id in range(1300, 1320) for row in images(class_id, 1, VAL)]  # labels 300..319
           + [row for class_id in range(5000, 5080) for row in images(class_id, 1, VAL)])  # not in train
    result = sample(tmp_path, train + val)
    assert result.classes == tuple(str(class_id) for class_id in range(1000, 1300))
    # train quota round(5120/300) = 17 (with 320 classes it would have been 16)
    assert per_label_counts(result.train) == {0: 17} | {label: 1 for label in range(1, 300)}
    # validation: 400 classes, capped to 300, quota round(512/300) = 2 (with 400 it would have been 1)
    assert result.val[:3] == (item(VAL, "1000_4", 0), item(VAL, "1000_0", 0), item(VAL, "1001_0", 1))
    assert per_label_counts(result.val) == {0: 2} | {label: 1 for label in range(1, 300)}


def test_validation_class_beyond_the_capped_train_classes_is_an_error(tmp_path):
    train = [row for class_id in range(305) for row in images(class_id, 1)]
    val = images(0, 1, VAL) + images(302, 1, VAL)
    with pytest.raises(DatasetError, match=r"^task 1 \(toy\): 1 validation class\(es\) absent from the train "
                                           r"split's 300 classes: 302$"):
        sample(tmp_path, train + val)


def test_validation_class_absent_from_train_is_an_error(tmp_path):
    files = images(1, 2) + images(2, 2) + images(1, 1, VAL) + images(8, 1, VAL) + images(9, 1, VAL)
    with pytest.raises(DatasetError, match=r"^task 1 \(toy\): 2 validation class\(es\) absent from the train "
                                           r"split's 2 classes: 8, 9$"):
        sample(tmp_path, files)


@pytest.mark.parametrize("files, split", [
    (images(1, 2, VAL) + [image(1, 5, problem=1)], "train"),
    (images(1, 2) + images(2, 1) + [image(1, 5, VAL, problem=1), image(1, 6, TEST)], "validation"),
])
def test_split_without_rows_is_an_error(tmp_path, files, split):
    database = tmp_path / "rolling_releases" / "database_2.sqlite"
    with pytest.raises(DatasetError, match=f"^task 1 \\(toy\\) has no {split} rows in {database}$"):
        sample(tmp_path, files)


def test_a_task_with_one_class_is_an_error(tmp_path):
    files = images(3, 4) + images(3, 2, VAL)
    with pytest.raises(DatasetError, match=r"^task 1 \(toy\) has only 1 class \(3\); "
                                           r"a task needs at least 2 classes$"):
        sample(tmp_path, files)


def test_task_not_in_datasets_table(tmp_path):
    database = write_database(tmp_path, images(1, 1))
    task = TaskInfo(order=0, task_id=42, name="missing")
    with pytest.raises(DatasetError, match=f"^task 42 \\(missing\\) is not in the datasets table of {database}$"):
        DctSource(tmp_path, [task]).sample(task)


def test_stat_name_disagreeing_with_database_warns_and_uses_the_database_folder(tmp_path, capsys):
    database = write_database(tmp_path, images(1, 1) + images(2, 1) + images(1, 1, split=VAL))
    task = TaskInfo(order=0, task_id=1, name="scenes")
    sample = DctSource(tmp_path, [task]).sample(task)
    assert capsys.readouterr().err == (f"warning: task 1 is named 'scenes' in the stat file but 'toy' in {database}; "
                                       "using the database's images of 'toy'\n")
    assert all(path.startswith("original_images/toy/") for path, _ in sample.train + sample.val)


def test_missing_database_names_the_expected_path(tmp_path):
    (tmp_path / "original_images").mkdir()
    expected = tmp_path / "rolling_releases" / "database_2.sqlite"
    with pytest.raises(DatasetError, match=f"^DCT database not found: expected {expected}$"):
        DctSource(tmp_path, [TOY])


def test_database_without_dct_tables(tmp_path):
    database = tmp_path / "rolling_releases" / "database_2.sqlite"
    database.parent.mkdir()
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE datasets(dataset_id INTEGER)")
    with pytest.raises(DatasetError, match=f"^{database} is not a DCT database: no table files$"):
        DctSource(tmp_path, [TOY])


def test_corrupt_database(tmp_path):
    database = tmp_path / "rolling_releases" / "database_2.sqlite"
    database.parent.mkdir()
    database.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatasetError, match=f"^cannot read the DCT database {database}: file is not a database$"):
        DctSource(tmp_path, [TOY])


def test_database_is_opened_read_only(tmp_path):
    database = write_database(tmp_path, images(1, 1))
    with closing(connect_read_only(database)) as connection:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("CREATE TABLE scratch(value INTEGER)")


# --- An independent, literal transcription of docs/release.md §4 (global random, plain dicts) ---------------

def release_split(database: Path, dataset_id: int, split: int, label_map: dict | None, amounts: tuple[int, int]):
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(ROWS_QUERY, (dataset_id, split)).fetchall()
    class_dict = {}
    for row in rows:
        if row[3] not in class_dict:
            class_dict[row[3]] = []
        class_dict[row[3]].append(row)
    if label_map is None:
        label_map = {}
        for index, key in enumerate(class_dict.keys()):
            label_map[key] = index
    num_classes = min(len(class_dict), 300)
    amount = amounts[0] if len(class_dict) >= 60 else amounts[1]
    quota = round(amount / num_classes)
    random.seed(27)
    picked = []
    count = 0
    for key in class_dict.keys():
        if len(class_dict) > 300 and key not in list(label_map.keys())[:num_classes]:
            continue
        random.shuffle(class_dict[key])
        for row in class_dict[key][:quota]:
            picked.append(("original_images/" + NAMES[dataset_id] + row[1] + row[2], label_map[key]))
        count += 1
        if count >= num_classes:
            break
    return tuple(picked), label_map


NAMES = {1: "small", 2: "many", 3: "capped"}


def random_database(root: Path, seed: int) -> Path:
    """Three tasks (5, 70 and 320 train classes) with random class sizes, rows shuffled together with
    problem rows, test rows and rows of the other tasks."""
    rng = random.Random(seed)
    files = []
    for dataset_id, classes, largest in ((1, 5, 1200), (2, 70, 200), (3, 320, 40)):
        class_ids = rng.sample(range(10_000), classes)
        for class_id in class_ids:
            for index in range(rng.randint(1, largest)):
                split = rng.choice((TRAIN, TRAIN, TRAIN, VAL, TEST))
                files.append(image(class_id, index, split, problem=int(rng.random() < 0.05), dataset_id=dataset_id))
        if classes > 300:  # validation classes the capped train split does not know
            files += [image(class_id, 0, VAL, dataset_id=dataset_id) for class_id in range(20_000, 20_040)]
        else:  # every validation class needs a train row
            files += [image(class_id, 1000, TRAIN, dataset_id=dataset_id) for class_id in class_ids]
    rng.shuffle(files)
    return write_database(root, files, datasets=tuple(NAMES.items()))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_literal_transcription_of_the_release(tmp_path, seed):
    database = random_database(tmp_path, seed)
    tasks = [TaskInfo(order=index, task_id=dataset_id, name=name)
             for index, (dataset_id, name) in enumerate(NAMES.items())]
    source = DctSource(tmp_path, tasks)
    state = random.getstate()
    try:
        for task in tasks:
            train, label_map = release_split(database, task.task_id, TRAIN, None, (5120, 2560))
            val, _ = release_split(database, task.task_id, VAL, label_map, (512, 256))
            result = source.sample(task)
            assert result.train == train
            assert result.val == val
            assert result.classes == tuple(str(key) for key in list(label_map)[:min(len(label_map), 300)])
    finally:
        random.setstate(state)
