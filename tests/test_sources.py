"""Stat files, data-folder detection, task selection, ImageFolder tasks, manifests and the file-existence check."""
import csv
import os
from pathlib import Path

import pytest

from dataset.sources import (DEFAULT_STAT, check_files_exist, manifest_text, open_data, read_stat, select_tasks,
                             write_manifest)
from common.errors import DatasetError
from dataset.task import TaskInfo, TaskSample
from tests.helpers import image, write_database

HEADER = "oldid,newid,name,class_num,train_num,test_num\n"
TASKS = [TaskInfo(0, 1, "scenes"), TaskInfo(1, 2, "birds"), TaskInfo(2, 17, "wikiart")]


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- stat files ---------------------------------------------------------------------------------------------

def test_release_stat_file():
    assert DEFAULT_STAT == Path(__file__).resolve().parent.parent / "stat.csv"
    assert DEFAULT_STAT.read_text().startswith(HEADER)
    tasks = read_stat(DEFAULT_STAT)
    assert len(tasks) == 53
    assert [task.order for task in tasks] == list(range(53))
    assert sum(task.class_num for task in tasks) == 1583
    assert sum(task.train_num for task in tasks) == 132_625
    assert sum(task.val_num for task in tasks) == 13_863
    assert tasks[0] == TaskInfo(order=0, task_id=1, name="scenes", class_num=67, train_num=5092, val_num=536)
    assert tasks[37] == TaskInfo(order=37, task_id=20, name="CelebA", class_num=5, train_num=2560, val_num=255)
    assert tasks[52] == TaskInfo(order=52, task_id=107, name="deepvp_shell", class_num=9, train_num=2556,
                                 val_num=252)


def test_stat_keeps_row_order_allows_blank_counts_and_a_byte_order_mark(tmp_path):
    path = write(tmp_path / "stat.csv", "\ufeff" + HEADER + "1,9,b,3,30,3\n0,4, a ,,,\n")
    assert read_stat(path) == [TaskInfo(1, 9, "b", 3, 30, 3), TaskInfo(0, 4, "a")]


@pytest.mark.parametrize("text, message", [
    ("oldid,newid,name\n0,1,a\n", "lacks column(s) class_num, train_num, test_num "
                                  "(expected oldid,newid,name,class_num,train_num,test_num)"),
    (HEADER, "lists no tasks"),
    (HEADER + "0,1,a,1,1,1\n1,x,b,1,1,1\n", "line 3: newid must be a whole number, got 'x'"),
    (HEADER + "0,1,a,1,1,-4\n", "line 2: test_num must be a whole number, got '-4'"),
    (HEADER + "0,1\n", "line 2: empty name"),
    (HEADER + "0,,a,1,1,1\n", "line 2: newid must be a whole number, got ''"),
    (HEADER + "0,1,a,1,1,1\n1,1,b,1,1,1\n", "lists the same task_id more than once: 1"),
    (HEADER + "0,1,a,1,1,1\n1,2,a,1,1,1\n", "lists the same name more than once: a"),
])
def test_bad_stat_files(tmp_path, text, message):
    path = write(tmp_path / "stat.csv", text)
    with pytest.raises(DatasetError) as error:
        read_stat(path)
    assert str(error.value) == f"stat file {path} {message}"


def test_missing_stat_file(tmp_path):
    with pytest.raises(DatasetError, match=f"^stat file not found: {tmp_path / 'nope.csv'}$"):
        read_stat(tmp_path / "nope.csv")


# --- task selection -----------------------------------------------------------------------------------------

def test_select_all_by_id_and_by_name_in_run_order():
    assert select_tasks(TASKS, None) == TASKS
    assert select_tasks(TASKS, ["17", "scenes"]) == [TASKS[0], TASKS[2]]
    assert select_tasks(TASKS, ["birds", "2"]) == [TASKS[1]]


def test_unknown_tasks_are_named_with_what_exists():
    with pytest.raises(DatasetError) as error:
        select_tasks(TASKS, ["birds", "3", "cats"])
    assert str(error.value) == "unknown task(s): 3, cats; available: 1 scenes, 2 birds, 17 wikiart"


# --- data-folder detection ----------------------------------------------------------------------------------

def test_missing_data_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"^data folder not found: {tmp_path / 'DATA'}$"):
        open_data(tmp_path / "DATA")


def test_data_path_that_is_a_file(tmp_path):
    path = write(tmp_path / "DATA")
    with pytest.raises(DatasetError, match=f"^not a folder: {path}$"):
        open_data(path)


def test_unrecognised_layout_explains_both(tmp_path):
    write(tmp_path / "notes" / "readme.txt")
    with pytest.raises(DatasetError) as error:
        open_data(tmp_path)
    assert str(error.value) == (
        f"{tmp_path} holds neither the DCT download ({tmp_path}/rolling_releases/database_2.sqlite with "
        "original_images/) nor task folders (<task>/train/<class>/<image> and <task>/val/<class>/<image>)")


def test_dct_detected_by_images_folder_requires_the_database(tmp_path):
    (tmp_path / "original_images").mkdir()
    with pytest.raises(DatasetError,
                       match=f"^DCT database not found: expected {tmp_path}/rolling_releases/database_2.sqlite$"):
        open_data(tmp_path)


def test_dct_tasks_come_from_the_default_or_given_stat(tmp_path):
    write_database(tmp_path, [image(1, 0), image(2, 0), image(1, 0, split=1)], datasets=((1, "scenes"),))
    source = open_data(tmp_path)
    assert (source.kind, source.root, source.tasks) == ("dct", tmp_path, read_stat(DEFAULT_STAT))
    stat = write(tmp_path / "mine.csv", HEADER + "0,1,scenes,1,1,1\n")
    source = open_data(tmp_path, stat)
    assert source.tasks == [TaskInfo(0, 1, "scenes", 1, 1, 1)]
    assert source.sample(source.tasks[0]).train == (("original_images/scenes/train/1_0.jpg", 0),
                                                    ("original_images/scenes/train/2_0.jpg", 1))


# --- your own tasks (ImageFolder convention) ----------------------------------------------------------------

def make_folder_tasks(root: Path) -> None:
    for relative in ["stars/train/b/2.png", "stars/train/b/10.JPG", "stars/train/a/x.jpeg",
                     "stars/train/a/deep/y.webp", "stars/train/a/notes.txt", "stars/train/a/.hidden.png",
                     "stars/train/a/.thumbs/t.png", "stars/train/.cache/z.png",
                     "stars/val/b/v.bmp", "stars/val/a/w.tif",
                     "clouds/train/cirrus/c.gif", "clouds/train/cumulus/e.png", "clouds/val/cirrus/d.ppm"]:
        write(root / relative)
    write(root / "README.txt")
    (root / "results").mkdir()  # no train/: not a task


def test_folder_tasks_are_sorted_and_every_image_is_taken(tmp_path):
    make_folder_tasks(tmp_path)
    source = open_data(tmp_path)
    assert (source.kind, source.tasks) == ("folders", [TaskInfo(0, 1, "clouds"), TaskInfo(1, 2, "stars")])
    stars = source.sample(source.tasks[1])
    assert stars == TaskSample(
        task=TaskInfo(1, 2, "stars"), classes=("a", "b"),
        train=(("stars/train/a/deep/y.webp", 0), ("stars/train/a/x.jpeg", 0),
               ("stars/train/b/10.JPG", 1), ("stars/train/b/2.png", 1)),
        val=(("stars/val/a/w.tif", 0), ("stars/val/b/v.bmp", 1)))
    clouds = source.sample(source.tasks[0])
    assert (clouds.classes, clouds.train, clouds.val) == (
        ("cirrus", "cumulus"), (("clouds/train/cirrus/c.gif", 0), ("clouds/train/cumulus/e.png", 1)),
        (("clouds/val/cirrus/d.ppm", 0),))


def test_folder_tasks_from_a_stat_file(tmp_path):
    make_folder_tasks(tmp_path)
    stat = write(tmp_path / "stat.csv", HEADER + "0,7,stars,2,4,2\n")
    source = open_data(tmp_path, stat)
    assert source.tasks == [TaskInfo(0, 7, "stars", 2, 4, 2)]
    missing = write(tmp_path / "other.csv", HEADER + "0,7,stars,2,4,2\n1,8,rain,,,\n2,9,snow,,,\n")
    with pytest.raises(DatasetError) as error:
        open_data(tmp_path, missing)
    assert str(error.value) == (f"no train/ folder for task(s) rain, snow under {tmp_path} "
                                "(expected <task>/train/<class>/<image> and <task>/val/<class>/<image>)")


@pytest.mark.parametrize("files, message", [
    (["t/train/a/1.png", "t/train/b/4.png", "t/val/c/2.png", "t/val/d/3.png"],
     "task t: validation class(es) absent from train/: c, d"),
    (["t/train/a/1.png", "t/train/b/2.png"], "task t has no val images (expected {root}/t/val/<class>/<image>)"),
    (["t/train/readme.txt", "t/val/a/1.png"], "task t has no train images (expected {root}/t/train/<class>/<image>)"),
    (["t/train/a/1.png", "t/train/b/x.txt", "t/val/a/2.png"],
     "task t: class folder(s) without images: {root}/t/train/b (add images or remove the folder)"),
    (["t/train/a/1.png", "t/train/b/2.png", "t/val/a/3.png", "t/val/b/notes.txt", "t/val/c/.keep"],
     "task t: class folder(s) without images: {root}/t/val/b, {root}/t/val/c (add images or remove the folder)"),
    (["t/train/a/1.png", "t/val/a/2.png"], "task t has only 1 class (a); a task needs at least 2 classes"),
])
def test_folder_task_errors(tmp_path, files, message):
    for relative in files:
        write(tmp_path / relative)
    source = open_data(tmp_path)
    with pytest.raises(DatasetError) as error:
        source.sample(source.tasks[0])
    assert str(error.value) == message.format(root=tmp_path)


def write_bytes_named(root: Path, relative: bytes) -> None:
    """An empty file at a path given as bytes, as a camera or another OS may name it."""
    path = os.fsencode(root) + b"/" + relative
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY))


def not_utf8_message(shown: str) -> str:
    return (f"{shown} is not a valid UTF-8 name (bytes shown as \\xNN): rename it, since manifests and results "
            "store names as UTF-8 text")


@pytest.mark.parametrize("bad_file, shown", [
    (b"p\xc3\xa9ts/train/a/caf\xe9.png", "péts/train/a/caf\\xe9.png"),  # valid UTF-8 stays as it is
    (b"p\xc3\xa9ts/val/caf\xe9/1.png", "péts/val/caf\\xe9"),
    (b"p\xc3\xa9ts/val/caf\xe9/.keep", "péts/val/caf\\xe9"),  # also when the class folder is empty
])
def test_a_name_that_is_not_utf8_is_refused_with_its_bytes_shown(tmp_path, bad_file, shown):
    for relative in ["péts/train/a/1.png", "péts/train/b/2.png", "péts/val/a/3.png"]:
        write(tmp_path / relative)
    write_bytes_named(tmp_path, bad_file)
    source = open_data(tmp_path)
    with pytest.raises(DatasetError) as error:
        source.sample(source.tasks[0])
    assert str(error.value) == not_utf8_message(f"{tmp_path}/{shown}")


def test_a_task_folder_name_that_is_not_utf8_is_refused_when_tasks_are_listed(tmp_path):
    write(tmp_path / "fine" / "train" / "a" / "1.png")
    write_bytes_named(tmp_path, b"caf\xe9/train/a/1.png")
    with pytest.raises(DatasetError) as error:
        open_data(tmp_path)
    assert str(error.value) == not_utf8_message(f"{tmp_path}/caf\\xe9")


# --- manifests and the file-existence check -----------------------------------------------------------------

SAMPLE = TaskSample(task=TaskInfo(0, 1, "scenes"), classes=("3", "1"),
                    train=(("original_images/scenes/train/c3/a.jpg", 0),
                           ("original_images/scenes/train/c1/b,c.jpg", 1)),
                    val=(("original_images/scenes/val/c1/d.jpg", 1),))


def test_manifest_text():
    assert manifest_text(SAMPLE) == ("split,path,label\n"
                                     "train,original_images/scenes/train/c3/a.jpg,0\n"
                                     'train,"original_images/scenes/train/c1/b,c.jpg",1\n'
                                     "val,original_images/scenes/val/c1/d.jpg,1\n")


def test_write_manifest_creates_the_task_folder_and_reads_back(tmp_path):
    path = tmp_path / "result" / "scenes" / "manifest.csv"
    write_manifest(SAMPLE, path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = [("train", *item) for item in SAMPLE.train] + [("val", *item) for item in SAMPLE.val]
    assert [(row["split"], row["path"], int(row["label"])) for row in rows] == expected
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.csv"]  # no temp file left behind


def test_check_files_exist(tmp_path):
    samples = [SAMPLE, TaskSample(task=TaskInfo(1, 2, "birds"), classes=("0",),
                                  train=tuple((f"b/{index}.png", 0) for index in range(6)), val=(("b/v.png", 0),))]
    for sample in samples:
        for path, _label in sample.train + sample.val:
            write(tmp_path / path)
    check_files_exist(tmp_path, samples)
    for missing in ["original_images/scenes/val/c1/d.jpg", "b/0.png", "b/2.png", "b/3.png", "b/4.png", "b/5.png"]:
        (tmp_path / missing).unlink()
    with pytest.raises(DatasetError) as error:
        check_files_exist(tmp_path, samples)
    assert str(error.value) == (f"6 of 10 image files missing under {tmp_path}: "
                                "original_images/scenes/val/c1/d.jpg, b/0.png, b/2.png, b/3.png, b/4.png, ...")
    (tmp_path / "b" / "1.png").unlink()
    (tmp_path / "b" / "1.png").mkdir()  # a folder where an image should be is missing too
    with pytest.raises(DatasetError, match="^7 of 10 image files missing"):
        check_files_exist(tmp_path, samples)


def test_a_token_that_is_one_tasks_id_and_another_tasks_name_is_refused():
    tasks = [TaskInfo(order=0, task_id=1, name="2"), TaskInfo(order=1, task_id=2, name="a")]
    with pytest.raises(DatasetError, match=r"^ambiguous task\(s\): 2 is both one task's id and another's name; "):
        select_tasks(tasks, ["2"])
    assert select_tasks(tasks, ["a", "1"]) == tasks
