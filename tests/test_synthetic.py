"""The synthetic DCT folder: deterministic, in the real format, with every awkward case a reader must handle."""
import csv
import hashlib
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DatasetError
from dataset import synthetic
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct

REPO = Path(__file__).resolve().parents[1]
TRAIN, VAL, TEST = 0, 1, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed0") / "data"
    assert write_synthetic_dct(out, seed=0) == out / "stat.csv"
    return out


def query(folder: Path, sql: str, *params) -> list[tuple]:
    db = sqlite3.connect(folder / "rolling_releases" / "database_2.sqlite")
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def files_rows(folder: Path) -> list[tuple]:
    sql = 'SELECT hash, path, filename, class_id, dataset_id, problem, "set" FROM files ORDER BY rowid'
    return query(folder, sql)


def image_bytes(folder: Path) -> dict[str, bytes]:
    root = folder / "original_images"
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def dataset_names(folder: Path) -> dict[int, str]:
    return dict(query(folder, "SELECT dataset_id, dataset_name FROM datasets"))


def read_stat(folder: Path) -> list[dict[str, str]]:
    with open(folder / "stat.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def per_class_counts(rows: list[tuple], dataset_id: int, split: int) -> Counter:
    return Counter(row[3] for row in rows if row[4] == dataset_id and row[5] == 0 and row[6] == split)


# ---- determinism ----

def test_same_seed_gives_identical_rows_and_image_bytes(folder: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    again.mkdir()  # an existing empty folder is accepted
    write_synthetic_dct(again, seed=0)
    assert files_rows(again) == files_rows(folder)
    datasets = "SELECT * FROM datasets ORDER BY rowid"
    assert query(again, datasets) == query(folder, datasets)
    assert image_bytes(again) == image_bytes(folder)
    assert (again / "stat.csv").read_text() == (folder / "stat.csv").read_text()


def test_another_seed_gives_other_rows_and_images(folder: Path, tmp_path: Path) -> None:
    write_synthetic_dct(tmp_path / "other", seed=1)
    assert files_rows(tmp_path / "other") != files_rows(folder)
    ours, theirs = image_bytes(folder), image_bytes(tmp_path / "other")
    shared = ours.keys() & theirs.keys()
    assert shared and all(ours[name] != theirs[name] for name in shared)


# ---- images ----

REQUIRED_FORMAT_MODES = {("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"),
                         ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")}


def test_every_task_has_every_format_and_mode_at_varied_non_square_sizes(folder: Path) -> None:
    root = folder / "original_images"
    for task in sorted(root.iterdir()):
        kinds, sizes = set(), set()
        for path in task.rglob("*.*"):
            with Image.open(path) as image:
                kinds.add((image.format, image.mode))
                sizes.add(image.size)
                image.convert("RGB")  # decodes fully
        assert REQUIRED_FORMAT_MODES <= kinds, task.name
        widths, heights = {w for w, _ in sizes}, {h for _, h in sizes}
        assert min(widths | heights) >= 36 and max(widths | heights) <= 96
        assert len(widths) > 10 and len(heights) > 10
        assert sum(w != h for w, h in sizes) > 0.8 * len(sizes)


def test_every_row_has_its_file_and_every_file_its_row(folder: Path) -> None:
    names = dataset_names(folder)
    from_rows = Counter(names[row[4]] + row[1] + row[2] for row in files_rows(folder))
    assert max(from_rows.values()) == 1
    assert set(from_rows) == set(image_bytes(folder))
    assert all(row[1].startswith("/") and row[1].endswith("/") for row in files_rows(folder))


def test_hash_column_is_the_sha256_of_the_file(folder: Path) -> None:
    names = dataset_names(folder)
    for digest, path, filename, _, dataset_id, _, _ in files_rows(folder)[:50]:
        data = (folder / "original_images" / (names[dataset_id] + path + filename)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest


# ---- database content ----

def test_schema_matches_the_dct_database(folder: Path) -> None:
    def columns(table: str) -> list[str]:
        return [row[1] for row in query(folder, f"PRAGMA table_info({table})")]

    assert columns("datasets") == ["dataset_id", "dataset_name", "good"]
    assert columns("files") == ["hash", "path", "filename", "class_id", "dataset_id", "problem", "set"]


def test_database_has_problem_and_test_rows_in_every_task(folder: Path) -> None:
    rows = files_rows(folder)
    for dataset_id in dataset_names(folder):
        mine = [row for row in rows if row[4] == dataset_id]
        assert any(row[6] == TEST for row in mine)
        assert any(row[5] != 0 for row in mine)
    assert {row[5] for row in rows} == {0, 1, 2}
    assert {row[6] for row in rows if row[5] != 0} == {TRAIN, VAL}


def test_rows_are_interleaved_across_tasks_and_classes(folder: Path) -> None:
    rows = files_rows(folder)
    task_changes = sum(a[4] != b[4] for a, b in zip(rows, rows[1:]))
    assert task_changes > 0.5 * len(rows)
    for dataset_id in dataset_names(folder):
        classes = [row[3] for row in rows if row[4] == dataset_id and row[5] == 0 and row[6] == TRAIN]
        first_appearance = list(dict.fromkeys(classes))
        assert first_appearance != sorted(first_appearance)  # label order differs from class-id order
        runs = 1 + sum(a != b for a, b in zip(classes, classes[1:]))
        assert runs > 0.6 * len(classes)


def test_dataset_and_class_ids_are_not_contiguous(folder: Path) -> None:
    dataset_ids = sorted(dataset_names(folder))
    assert dataset_ids != list(range(dataset_ids[0], dataset_ids[0] + len(dataset_ids)))
    for dataset_id in dataset_ids:
        class_ids = sorted({row[3] for row in files_rows(folder) if row[4] == dataset_id})
        assert class_ids[0] != 0
        assert class_ids != list(range(class_ids[0], class_ids[0] + len(class_ids)))


def test_every_validation_class_is_a_train_class(folder: Path) -> None:
    rows = files_rows(folder)
    for dataset_id in dataset_names(folder):
        assert set(per_class_counts(rows, dataset_id, VAL)) == set(per_class_counts(rows, dataset_id, TRAIN))


# ---- stat file ----

def test_stat_lists_demo_tasks_first_with_the_counts_sampling_yields(folder: Path) -> None:
    stat, rows, names = read_stat(folder), files_rows(folder), dataset_names(folder)
    assert (folder / "stat.csv").read_text().splitlines()[0] == "oldid,newid,name,class_num,train_num,test_num"
    assert tuple(line["name"] for line in stat[:len(DEMO_TASKS)]) == DEMO_TASKS
    assert [int(line["oldid"]) for line in stat] == list(range(len(stat)))
    assert {int(line["newid"]): line["name"] for line in stat} == names
    assert max(int(line["class_num"]) for line in stat) >= 60
    for line in stat:
        dataset_id = int(line["newid"])
        train, val = per_class_counts(rows, dataset_id, TRAIN), per_class_counts(rows, dataset_id, VAL)
        classes = len(train)
        # every class is under its quota (docs/release.md §4, worked out by hand), so sampling takes all rows
        train_quota, val_quota = {5: (512, 51), 60: (85, 9)}[classes]  # round(5120 / 60) = 85, round(8.53) = 9
        assert max(train.values()) <= train_quota and max(val.values()) <= val_quota
        assert (int(line["class_num"]), int(line["train_num"]), int(line["test_num"])) == (
            classes, sum(train.values()), sum(val.values()))


def test_demo_tasks_have_the_size_the_demo_expects(folder: Path) -> None:
    rows, ids = files_rows(folder), {name: dataset_id for dataset_id, name in dataset_names(folder).items()}
    for name in DEMO_TASKS:
        train, val = per_class_counts(rows, ids[name], TRAIN), per_class_counts(rows, ids[name], VAL)
        assert 4 <= len(train) <= 6
        assert 60 <= min(train.values()) and max(train.values()) <= 68
        assert 8 <= min(val.values()) and max(val.values()) <= 10


def test_no_task_ends_on_a_training_batch_of_one_image(folder: Path) -> None:
    """BatchNorm in train mode fails on a batch of one at 32 px (layer4 is 1x1), so the plan adds an image."""
    assert all(int(line["train_num"]) % 32 != 1 for line in read_stat(folder))
    one_class = synthetic.SyntheticTask(7, "t", (("c", None),), synthetic.SplitSizes((33, 33), (1, 1), (0, 0), (0, 0)))
    assert synthetic._task_plan(one_class, np.random.default_rng(0)) == [[(TRAIN, 0)] * 33 + [(VAL, 0), (TRAIN, 0)]]


def test_demo_classes_are_told_apart_by_coarse_pixel_statistics(folder: Path) -> None:
    """A nearest-class-mean classifier on 8x8 thumbnails: what a frozen random backbone can pick up."""
    rows, names = files_rows(folder), dataset_names(folder)

    def thumbnails(dataset_id: int, split: int) -> tuple[np.ndarray, list[int]]:
        chosen = [row for row in rows if row[4] == dataset_id and row[5] == 0 and row[6] == split]
        paths = [folder / "original_images" / (names[dataset_id] + row[1] + row[2]) for row in chosen]
        pixels = [np.asarray(Image.open(path).convert("RGB").resize((8, 8), Image.BILINEAR), dtype=float).ravel()
                  for path in paths]
        return np.stack(pixels), [row[3] for row in chosen]

    for dataset_id, name in names.items():
        if name not in DEMO_TASKS:
            continue
        train_x, train_y = thumbnails(dataset_id, TRAIN)
        val_x, val_y = thumbnails(dataset_id, VAL)
        classes = sorted(set(train_y))
        means = np.stack([train_x[np.array(train_y) == c].mean(0) for c in classes])
        predicted = [classes[i] for i in ((val_x[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
        accuracy = np.mean(np.array(predicted) == np.array(val_y))
        assert accuracy >= 0.75, (name, accuracy)


# ---- errors and atomicity ----

def test_failure_mid_generation_leaves_no_folder_and_no_temp_dir(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real_encode = synthetic.encode_image

    def failing_encode(*args):
        calls.append(1)
        if len(calls) == 100:
            raise RuntimeError("disk full")
        return real_encode(*args)

    monkeypatch.setattr(synthetic, "encode_image", failing_encode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_dct(tmp_path / "data")
    assert len(calls) == 100
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"already exists and is not an empty folder"):
        write_synthetic_dct(tmp_path / "data")
    assert [path.name for path in tmp_path.rglob("*")] == ["data", "keep.txt"]


def test_refuses_a_negative_seed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^the seed must be >= 0, got -1$"):
        write_synthetic_dct(tmp_path / "data", seed=-1)
    assert list(tmp_path.iterdir()) == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataset.synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_folder_and_reports_a_mistake_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "data"
    done = run_cli(str(out), "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert f"stat file {out / 'stat.csv'}" in done.stdout
    assert done.stdout.endswith((out / "stat.csv").read_text())
    assert (out / "rolling_releases" / "database_2.sqlite").is_file()

    again = run_cli(str(out))
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr == f"error: {out} already exists and is not an empty folder; choose a new path\n"


def test_cli_help_and_bad_options(tmp_path: Path) -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "--seed" in done.stdout and "DCT" in done.stdout
    out = str(tmp_path / "out")
    for args, message in [((out, "--seed", "abc"), "argument --seed: invalid int value: 'abc' (see --help)"),
                          ((out, "--seed", "-5"), "the seed must be >= 0, got -5"),
                          ((), "the following arguments are required: out (see --help)")]:
        done = run_cli(*args)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {message}\n")
    assert list(tmp_path.iterdir()) == []
