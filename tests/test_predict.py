"""--predict, the task mapper's anchors and the task-agnostic evaluation, on one trained run of the demo tasks."""
import shutil
from pathlib import Path

import pytest
import torch

import main
from dataset.synthetic import DEMO_TASKS
from tests.helpers import read_csv_text

pytestmark = pytest.mark.slow  # every test here reads or makes a trained run

METHOD = "Ghost_reduced_v1"
FEATURES = 512  # resnet18's pooled features


def settings(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--stat", str(data / "stat.csv"), "--arch", "resnet18", "--weights", "none",
            "--image-size", "32", "--epochs", "2", "--workers", "0", "--result", str(out / "result"),
            "--weight", str(out / "weight"), "--cache-dir", str(out / "cache")]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """The three very different demo domains, trained once."""
    out = tmp_path_factory.mktemp("run")
    assert main.main([*settings(data, out), "--tasks", *DEMO_TASKS]) == 0
    return out


def saved(run: Path, task: str) -> dict:
    return torch.load(run / "weight" / f"{task}_{METHOD}.pt", weights_only=True)


def val_items(data: Path, run: Path, task: str) -> list[tuple[str, int]]:
    """The task's validation images (paths under the data folder) and labels, in manifest order."""
    rows = read_csv_text((run / "result" / task / "manifest.csv").read_text())
    return [(str(data / row["path"]), int(row["label"])) for row in rows if row["split"] == "val"]


def predict(data: Path, run: Path, capsys, paths, *extra: str) -> list[dict]:
    """Rows of the CSV that main.py --predict prints."""
    capsys.readouterr()
    assert main.main([*settings(data, run), "--predict", *map(str, paths), *extra]) == 0
    return read_csv_text(capsys.readouterr().out)


def test_files_and_folders_are_classified_with_the_given_task(data, run, capsys, tmp_path):
    task = DEMO_TASKS[1]
    label_map = saved(run, task)["label_map"]
    images = [Path(path) for path, _ in val_items(data, run, task)[:6]]
    folder = tmp_path / "new"
    for index, image in enumerate(images[3:]):
        (folder / f"sub{index % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"sub{index % 2}" / f"{index}_{image.name}")
    (folder / "notes.txt").write_text("not an image")

    rows = predict(data, run, capsys, [*images[:3], folder], "--task", task)
    expected = [str(path) for path in images[:3]] + sorted(str(path) for path in folder.rglob("*_*"))
    assert [row["path"] for row in rows] == expected
    assert list(rows[0]) == ["path", "task", "label", "class", "confidence"]
    for row in rows:
        assert row["task"] == task
        assert label_map[row["class"]] == int(row["label"])
        assert 0 < float(row["confidence"]) <= 1
    # a copied image is classified exactly as its original
    copies = {Path(row["path"]).name.split("_", 1)[1]: row for row in rows[3:]}
    again = predict(data, run, capsys, images[3:], "--task", task)
    assert [(row["label"], row["confidence"]) for row in again] == [
        (copies[path.name]["label"], copies[path.name]["confidence"]) for path in images[3:]]


def test_predicting_validation_images_reproduces_the_recorded_accuracy_exactly(data, run, capsys, tmp_path):
    for task in DEMO_TASKS:
        record = saved(run, task)
        items = val_items(data, run, task)
        output = tmp_path / f"{task}.csv"
        assert main.main([*settings(data, run), "--predict", *[path for path, _ in items],
                          "--task", str(record["task_id"]), "--output", str(output)]) == 0
        rows = read_csv_text(output.read_text())
        correct = sum(int(row["label"]) == label for row, (_, label) in zip(rows, items, strict=True))
        assert correct == record["best_correct"] and correct / len(items) == record["best_acc"], task


def test_anchors_are_written_after_training_small_and_refitted_when_deleted(data, run, capsys):
    anchors = {task: run / "weight" / "anchors" / f"{task}.pt" for task in DEMO_TASKS}
    stored = {task: torch.load(path, weights_only=True) for task, path in anchors.items()}
    for task, anchor in stored.items():
        classes = len(saved(run, task)["label_map"])
        assert anchor["scaled_means"].dtype == torch.float16 and anchor["scaled_means"].shape == (classes, FEATURES)
        assert anchor["std"].dtype == torch.float32 and anchor["std"].shape == (FEATURES,)
        assert anchor["backbone"] == "none:seed0" and anchor["image_size"] == 32 and anchor["arch"] == "resnet18"
        assert anchor["manifest_sha256"] == saved(run, task)["config"]["manifest_sha256"]
        # the two tensors and little else: 2 bytes per class mean, 4 per deviation, under 3 KB of metadata
        assert anchors[task].stat().st_size < classes * FEATURES * 2 + FEATURES * 4 + 3000

    anchors[DEMO_TASKS[2]].unlink()
    images = [path for path, _ in val_items(data, run, DEMO_TASKS[2])[:2]]
    predict(data, run, capsys, images, "--task", "auto")
    refitted = torch.load(anchors[DEMO_TASKS[2]], weights_only=True)
    assert refitted.keys() == stored[DEMO_TASKS[2]].keys()
    for key, value in stored[DEMO_TASKS[2]].items():
        assert torch.equal(refitted[key], value) if isinstance(value, torch.Tensor) else refitted[key] == value


def test_auto_finds_the_task_and_the_agnostic_csv_agrees_with_predictions(data, run, capsys):
    """The run wrote the task-agnostic CSV; --task auto on each task's validation images (the same batches)
    gives its mapper counts, and with --task given, its end-to-end counts."""
    text = (run / "result" / f"task_agnostic_{METHOD}.csv").read_text()
    assert text.splitlines()[0] == "task_id,task_name,val_images,mapper_correct,end_to_end_correct"
    written = {row["task_name"]: row for row in read_csv_text(text)}
    assert list(written) == list(DEMO_TASKS)
    for task in DEMO_TASKS:
        items = val_items(data, run, task)
        paths = [path for path, _ in items]
        auto = predict(data, run, capsys, paths, "--task", "auto")
        given = predict(data, run, capsys, paths, "--task", task)
        assert list(auto[0]) == ["path", "task", "label", "class", "confidence", "task_margin"]
        assert all(float(row["task_margin"]) >= 0 for row in auto)
        mapped = [row["task"] == task for row in auto]
        right = [int(row["label"]) == label for row, (_, label) in zip(given, items, strict=True)]
        row = written[task]
        assert int(row["task_id"]) == saved(run, task)["task_id"] and int(row["val_images"]) == len(items)
        assert int(row["mapper_correct"]) == sum(mapped)
        assert int(row["end_to_end_correct"]) == sum(m and r for m, r in zip(mapped, right))
        # the three domains differ in every way: the mapper finds nearly every image's task
        assert sum(mapped) >= 0.8 * len(items), (task, sum(mapped), len(items))


T0 = DEMO_TASKS[0]


@pytest.mark.parametrize("paths, extra, message", [
    (["GOOD"], ["--task", "no_such_task"], "unknown task(s): no_such_task"),
    (["GOOD"], ["--task", T0, "--image-size", "48"], "was trained with --image-size 32 (now 48)"),
    (["GOOD"], ["--task", T0, "--arch", "resnet50"], "was trained with --arch resnet18 (now resnet50)"),
    (["GOOD"], ["--task", T0, "--method", "Ghost"], "no task has weights for --method Ghost in "),
    (["GOOD", "BAD"], ["--task", T0], "cannot be read: BAD: "),
    (["GOOD", "EMPTY"], ["--task", "auto"], "no image files under EMPTY"),
    (["TEXT"], ["--task", T0], "no image files under TEXT"),
    (["MISSING"], ["--task", T0], "image file or folder not found: MISSING"),
    (["GOOD"], [], "--predict needs --task NAME_OR_ID"),
    (["GOOD"], ["--task", T0, "--output", "NOFOLDER"], "cannot write --output NOFOLDER: no folder"),
], ids=["unknown-task", "image-size", "arch", "method", "unreadable", "empty-folder", "no-images", "missing",
        "no-task", "output-folder"])
def test_bad_input_is_one_line_and_writes_nothing(data, run, capsys, tmp_path, paths, extra, message):
    places = {"GOOD": val_items(data, run, T0)[0][0], "BAD": tmp_path / "bad.png", "EMPTY": tmp_path / "empty",
              "TEXT": tmp_path / "text", "MISSING": tmp_path / "gone.png", "NOFOLDER": tmp_path / "no" / "out.csv"}
    places["BAD"].write_bytes(b"not a png")
    places["EMPTY"].mkdir()
    places["TEXT"].mkdir()
    (places["TEXT"] / "readme.txt").write_text("no image here")
    output = tmp_path / "out.csv"
    extra = extra if "--output" in extra else [*extra, "--output", "OUT"]
    places["OUT"] = output
    capsys.readouterr()
    args = ["--predict", *[str(places[path]) for path in paths], *[str(places.get(token, token)) for token in extra]]
    assert main.main([*settings(data, run), *args]) != 0
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and captured.err.strip().endswith(errors[0]), captured.err
    for name, place in places.items():
        message = message.replace(name, str(place))
    assert message in errors[0]
    assert not output.exists() and not (tmp_path / "no").exists() and captured.out == ""


def test_predicting_needs_only_the_weight_folder(data, run, capsys, tmp_path, monkeypatch):
    """Another folder, no --data, no training options: the records give the tasks, label maps and settings."""
    task = DEMO_TASKS[1]
    images = [path for path, _ in val_items(data, run, task)[:4]]
    given, auto = predict(data, run, capsys, images, "--task", task), predict(data, run, capsys, images, "--task", "auto")
    monkeypatch.chdir(tmp_path)
    for choice, expected in ((task, given), ("auto", auto)):
        assert main.main(["--predict", *images, "--task", choice, "--weight", str(run / "weight")]) == 0
        assert read_csv_text(capsys.readouterr().out) == expected
    assert not (tmp_path / "demo_data").exists()
    # an anchor that has to be fitted needs the training images: one line saying so
    (tmp_path / "weight").mkdir()
    for path in (run / "weight").glob(f"*_{METHOD}.pt"):
        shutil.copy(path, tmp_path / "weight" / path.name)
    assert main.main(["--predict", *images, "--task", "auto"]) == 2
    assert "has no usable task-mapper anchor" in capsys.readouterr().err


def test_task_and_output_without_predict_are_refused(data, run, capsys):
    assert main.main([*settings(data, run), "--task", DEMO_TASKS[0]]) != 0
    assert capsys.readouterr().err.strip() == "error: --task and --output go with --predict PATH [PATH ...]"
