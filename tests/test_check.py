"""The preflight check on synthetic DCT data and on task folders: passing, and each way of failing."""
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from dataset.check import check_tasks
from dataset.sources import manifest_text, open_data
from dataset.task import TaskInfo
from tests.helpers import noise


def manifests(folder: Path):
    """Where check_tasks writes each task's manifest: <folder>/<task>/manifest.csv, as a run's result folder."""
    return lambda task: folder / task.name / "manifest.csv"


@pytest.fixture
def copied(data, tmp_path):
    """The session's synthetic DCT folder, copied: these tests damage it."""
    root = tmp_path / "DATA"
    shutil.copytree(data, root)
    return root


def table_rows(capsys) -> list[list[str]]:
    return [line.split(None, 6) for line in capsys.readouterr().out.splitlines()]


def write_pets(root: Path, classes: tuple[str, ...] = ("cat", "dog")) -> None:
    """A folder task of real images: 3 train and 1 val per class."""
    for split, count in (("train", 3), ("val", 1)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(noise(index + 10 * label, 40, 30)).save(folder / f"{index}.png")


def test_a_sound_folder_passes_with_a_row_per_task_and_manifests(data, tmp_path, capsys):
    source = open_data(data, data / "stat.csv")
    assert check_tasks(source, source.tasks, manifests(tmp_path / "result"), workers=2) == []
    assert table_rows(capsys) == [
        ["order", "id", "name", "classes", "train", "val", "status"],
        ["0", "12", "shapes", "5", "322", "46", "OK"],
        ["1", "5", "stripes", "5", "316", "42", "OK"],
        ["2", "31", "blob_scenes", "5", "319", "44", "OK"],
        ["3", "2", "compass60", "60", "146", "60", "OK"],
    ]
    for task in source.tasks:
        written = (tmp_path / "result" / task.name / "manifest.csv").read_text()
        assert written == manifest_text(source.sample(task))


def test_missing_and_corrupt_images_are_named_per_task(copied, tmp_path, capsys):
    source = open_data(copied, copied / "stat.csv")
    shapes, stripes, scenes = source.tasks[:3]
    missing = source.sample(shapes).val[3][0]
    corrupt = source.sample(stripes).train[10][0]
    (copied / missing).unlink()
    (copied / corrupt).write_bytes(b"\x89PNG but not really")

    problems = check_tasks(source, [shapes, stripes, scenes], manifests(tmp_path / "result"), workers=2)

    assert problems[0] == f"shapes: 1 of 368 images under {copied} cannot be read: {missing}: file not found"
    assert problems[1].startswith(f"stripes: 1 of 358 images under {copied} cannot be read: "
                                  f"{corrupt}: cannot identify image file ")
    assert len(problems) == 2
    assert [row[6] for row in table_rows(capsys)[1:]] == ["1 unreadable images", "1 unreadable images", "OK"]
    assert (tmp_path / "result" / "shapes" / "manifest.csv").is_file()


def test_counts_that_differ_from_the_stat_file_are_mismatches(data, tmp_path, capsys):
    stat = tmp_path / "stat.csv"
    stat.write_text("oldid,newid,name,class_num,train_num,test_num\n"
                    "0,12,shapes,6,323,46\n"
                    "1,5,stripes,,316,\n"  # blank: not recorded, not compared
                    "2,31,blob_scenes,5,319,45\n")
    source = open_data(data, stat)

    problems = check_tasks(source, source.tasks, manifests(tmp_path / "result"), workers=0)

    assert problems == ["shapes: 5 classes, the stat file says 6", "shapes: 322 train images, the stat file says 323",
                        "blob_scenes: 44 val images, the stat file says 45"]
    assert [row[6] for row in table_rows(capsys)[1:]] == [
        "classes 5, stat 6; train images 322, stat 323", "OK", "val images 44, stat 45"]


def test_a_task_that_cannot_be_sampled_fails_alone(data, tmp_path, capsys):
    source = open_data(data, data / "stat.csv")
    ghost = TaskInfo(order=9, task_id=77, name="ghost", class_num=3)
    tasks = [source.tasks[1], ghost]

    problems = check_tasks(source, tasks, manifests(tmp_path / "result"), workers=0)

    database = data / "rolling_releases" / "database_2.sqlite"
    assert problems == [f"ghost: task 77 (ghost) is not in the datasets table of {database}"]
    assert table_rows(capsys)[1:] == [["1", "5", "stripes", "5", "316", "42", "OK"],
                                      ["9", "77", "ghost", "-", "-", "-", "cannot sample"]]
    assert not (tmp_path / "result" / "ghost").exists()
    assert (tmp_path / "result" / "stripes" / "manifest.csv").is_file()


def test_task_folders_are_checked_the_same_way(tmp_path, capsys):
    root = tmp_path / "mine"
    write_pets(root / "pets")
    (root / "pets" / "val" / "dog" / "broken.jpg").write_bytes(b"")
    source = open_data(root)

    problems = check_tasks(source, source.tasks, manifests(tmp_path / "result"), workers=0)

    assert problems == [f"pets: 1 of 9 images under {root} cannot be read: "
                        f"pets/val/dog/broken.jpg: cannot identify image file '{root}/pets/val/dog/broken.jpg'"]
    assert table_rows(capsys)[1:] == [["0", "1", "pets", "2", "6", "3", "1 unreadable images"]]


def test_folder_tasks_that_cannot_train_are_mismatches(tmp_path, capsys):
    root = tmp_path / "mine"
    write_pets(root / "pets")
    write_pets(root / "solo", classes=("cat",))
    write_pets(root / "sparse")
    (root / "sparse" / "val" / "fox").mkdir()
    source = open_data(root)

    problems = check_tasks(source, source.tasks, manifests(tmp_path / "result"), workers=0)

    assert problems == ["solo: task solo has only 1 class (cat); a task needs at least 2 classes",
                        f"sparse: task sparse: class folder(s) without images: {root}/sparse/val/fox "
                        "(add images or remove the folder)"]
    assert [row[6] for row in table_rows(capsys)[1:]] == ["OK", "cannot sample", "cannot sample"]
    assert sorted(path.name for path in (tmp_path / "result").iterdir()) == ["pets"]


def test_a_file_name_that_is_not_utf8_is_a_mismatch_naming_it(tmp_path, capsys):
    root = tmp_path / "mine"
    write_pets(root / "pets")
    os.close(os.open(os.fsencode(root / "pets" / "train" / "dog") + b"/caf\xe9.png", os.O_CREAT | os.O_WRONLY))
    source = open_data(root)

    problems = check_tasks(source, source.tasks, manifests(tmp_path / "result"), workers=0)

    assert problems == [f"pets: {root}/pets/train/dog/caf\\xe9.png is not a valid UTF-8 name (bytes shown as \\xNN): "
                        "rename it, since manifests and results store names as UTF-8 text"]
    assert table_rows(capsys)[1:] == [["0", "1", "pets", "-", "-", "-", "cannot sample"]]
    assert not (tmp_path / "result" / "pets").exists()
