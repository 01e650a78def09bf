"""main.py end to end on synthetic DCT data: outputs, verified report, resume, --fresh and user errors."""
import subprocess
import sys
from pathlib import Path

import pytest

import main
from dataset.synthetic import DEMO_TASKS, write_synthetic_dct
from network import build_model, load_backbone, task_state
from tests.helpers import TASKS, Kill, assert_same_states, read_csv, run_args, saved_states, tensors_in

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """One uninterrupted run of two tasks: the reference for every resume test."""
    out = tmp_path_factory.mktemp("run")
    assert main.main(run_args(data, out)) == 0
    return out


@pytest.mark.slow
def test_run_writes_results_weights_logs_manifests_and_verified_report(data, finished):
    rows = read_csv(finished / "result" / "Ghost_reduced_v1.csv")
    assert [row["task_name"] for row in rows] == TASKS
    weights = saved_states(finished)
    assert sorted(weights) == sorted(f"{t}_Ghost_reduced_v1.pt" for t in TASKS)
    for row in rows:
        saved = weights[f"{row['task_name']}_Ghost_reduced_v1.pt"]
        assert float(row["best_acc"]) == saved["best_acc"] == saved["best_correct"] / saved["val_images"]
        assert saved["best_acc"] == max(epoch["val_acc"] for epoch in saved["history"])
        assert saved["best_epoch"] == 1 + [e["val_acc"] for e in saved["history"]].index(saved["best_acc"])
        assert saved["config"]["method"] == "Ghost_reduced_v1" and saved["config"]["backbone"] == "none:seed0"
        # The task's state is the only floating-point tensor data in the file, and it is exactly what the
        # network's task_state holds for a model of this task.
        assert tensors_in({k: v for k, v in saved.items() if k != "state"}) == []
        assert all(t.is_floating_point() for t in saved["state"].values())
        model = build_model(load_backbone("resnet18", "none"), "Ghost_reduced_v1", len(saved["label_map"]))
        assert saved["state"].keys() == task_state(model).keys()
        assert sorted(saved["label_map"].values()) == list(range(len(saved["label_map"])))

        task_dir = finished / "result" / row["task_name"]
        manifest = read_csv(task_dir / "manifest.csv")
        assert sum(r["split"] == "train" for r in manifest) == saved["train_images"]
        assert sum(r["split"] == "val" for r in manifest) == saved["val_images"]
        log_text = (task_dir / "Ghost_reduced_v1.log").read_text()
        for needle in ("settings: arch=resnet18", "runtime: device cpu, fp32", "label map", "task-specific parameters:", "epoch 2/2: train loss",
                       f"best epoch {saved['best_epoch']}"):
            assert needle in log_text

    report = (finished / "result" / "report.md").read_text()
    assert (f"{len(TASKS)} task(s) re-loaded onto a freshly built backbone and re-evaluated on their validation "
            "split: all re-evaluated accuracies equal the recorded ones") in report
    for row in rows:
        saved = weights[f"{row['task_name']}_Ghost_reduced_v1.pt"]
        line = next(line for line in report.splitlines() if f"| {row['task_name']} |" in line)
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[5:] == [str(saved["val_images"]), f"{100 * float(row['best_acc']):.2f}",
                             f"{saved['percent_of_backbone']:.3f}"]
    assert not list((finished / "weight").glob("*.resume.pt"))


@pytest.mark.slow
def test_accuracy_well_above_chance(finished):
    for path, saved in saved_states(finished).items():
        chance = 1 / len(saved["label_map"])
        assert saved["best_acc"] > 1.5 * chance, (path, saved["best_acc"])


@pytest.mark.slow
def test_rerun_skips_finished_tasks(data, finished, capsys):
    before = read_csv(finished / "result" / "Ghost_reduced_v1.csv")
    assert main.main(run_args(data, finished)) == 0
    assert capsys.readouterr().out.count("already done") == len(TASKS)
    assert read_csv(finished / "result" / "Ghost_reduced_v1.csv") == before


@pytest.mark.slow
@pytest.mark.parametrize("kill_at_epoch_call", [2, 3], ids=["mid-first-task", "start-of-second-task"])
def test_interrupted_run_resumes_to_identical_results(data, finished, tmp_path, monkeypatch, kill_at_epoch_call):
    kill = Kill(monkeypatch, kill_at_epoch_call)
    assert main.main(run_args(data, tmp_path)) == 130
    if kill_at_epoch_call == 2:
        assert list((tmp_path / "weight").glob("*.resume.pt"))  # epoch 1 of the first task was saved
    kill.disarm()
    assert main.main(run_args(data, tmp_path)) == 0
    assert read_csv(tmp_path / "result" / "Ghost_reduced_v1.csv") == read_csv(
        finished / "result" / "Ghost_reduced_v1.csv")
    assert_same_states(saved_states(tmp_path), saved_states(finished))
    assert not list((tmp_path / "weight").glob("*.resume.pt"))


@pytest.mark.slow
def test_fresh_starts_over(data, finished, tmp_path, capsys):
    assert main.main(run_args(data, tmp_path, "--tasks", TASKS[0])) == 0
    (tmp_path / "weight" / f"{TASKS[0]}_Ghost_reduced_v1.resume.pt").write_bytes(b"stale")
    capsys.readouterr()
    assert main.main(run_args(data, tmp_path, "--tasks", TASKS[0], "--fresh")) == 0
    output = capsys.readouterr().out
    assert "already done" not in output and "resuming" not in output
    assert "epoch 1/2" in output
    first = read_csv(finished / "result" / "Ghost_reduced_v1.csv")[0]
    assert read_csv(tmp_path / "result" / "Ghost_reduced_v1.csv") == [first]


@pytest.mark.slow
def test_changed_settings_on_rerun_are_refused(data, finished, capsys):
    assert main.main(run_args(data, finished, "--epochs", "3")) == 2
    error = capsys.readouterr().err
    assert "other settings or data: --epochs 2 (now 3)" in error and "--fresh" in error


@pytest.mark.slow
def test_other_data_under_the_same_weights_is_refused(finished, tmp_path, capsys):
    other = tmp_path / "other"
    write_synthetic_dct(other, seed=1)  # the same task names, other images
    assert main.main(run_args(other, finished)) == 2
    error = capsys.readouterr().err
    assert "other settings or data: the data" in error and "--fresh" in error


@pytest.mark.slow
def test_a_new_result_folder_adopts_finished_weights_instead_of_retraining(data, finished, tmp_path, capsys):
    weights_before = saved_states(finished)
    assert main.main(run_args(data, finished, "--result", str(tmp_path / "result"))) == 0
    assert capsys.readouterr().out.count("already done") == len(TASKS)
    assert read_csv(tmp_path / "result" / "Ghost_reduced_v1.csv") == read_csv(
        finished / "result" / "Ghost_reduced_v1.csv")
    assert_same_states(saved_states(finished), weights_before)


@pytest.mark.slow
def test_report_covers_every_finished_task_after_a_subset_run(data, finished, capsys):
    assert main.main(run_args(data, finished, "--tasks", TASKS[1])) == 0
    report = (finished / "result" / "report.md").read_text()
    assert all(f"| {task} |" in report for task in TASKS) and f"**average over {len(TASKS)} tasks**" in report


@pytest.mark.slow
def test_report_puts_methods_side_by_side(data, finished, tmp_path):
    out = tmp_path
    for method in ("Ghost_reduced_v1", "Ghost"):
        assert main.main(run_args(data, out, "--tasks", TASKS[0], "--epochs", "1", "--method", method)) == 0
    report = (out / "result" / "report.md").read_text()
    assert report.startswith("# Per-task results: CLR (Ghost_reduced_v1), CLR-Full (Ghost)")
    header = next(line for line in report.splitlines() if line.startswith("| order"))
    assert "| CLR acc % | CLR-Full acc % | CLR params % | CLR-Full params % |" in header
    clr, full = (float(read_csv(out / "result" / f"{m}.csv")[0]["best_acc"]) for m in ("Ghost_reduced_v1", "Ghost"))
    row = next(line for line in report.splitlines() if f"| {TASKS[0]} |" in line)
    assert f"| {100 * clr:.2f} | {100 * full:.2f} |" in row


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--data", "no/such/folder"], "no/such/folder"),
    (["--tasks", "no_such_task"], "no_such_task"),
    (["--method", "Ghostly"], "invalid choice: 'Ghostly'"),
    (["--weights", "garbage.pt"], "garbage.pt"),
    (["--epochs", "0"], "argument --epochs: must be positive, got 0"),
    (["--batch-size", "-3"], "argument --batch-size: must be positive, got -3"),
    (["--result", "a_file/result"], "cannot write to the result folder"),
    (["--check", "--result", "a_file/result"], "cannot write to the result folder"),
    (["--lr", "nan"], "argument --lr: must be positive, got nan"),
    (["--batch-size", "1", "--image-size", "32"], "BatchNorm cannot train on one image per batch"),
], ids=["missing-data", "unknown-task", "unknown-method", "unreadable-weights", "zero-epochs",
        "negative-batch", "unwritable-result", "unwritable-result-check", "nan-lr", "one-image-batches"])
def test_user_mistakes_are_one_line_errors(data, tmp_path, monkeypatch, capsys, args, message):
    """In this process, as ``sys.exit(main())`` runs it: an exception main.py lets out would fail the test here,
    as it would print a traceback there (test_a_mistake_in_a_real_process_is_one_line checks the process)."""
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "a_file").write_text("")
    monkeypatch.chdir(tmp_path)
    base = ["--data", str(data), "--stat", str(data / "stat.csv"), "--weights", "none", "--workers", "0"]
    try:
        code = main.main([*base, *args])
    except SystemExit as stop:  # argparse's errors
        code = stop.code
    stderr = capsys.readouterr().err
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    assert message in errors[0]


def test_a_mistake_in_a_real_process_is_one_line(data, tmp_path):
    result = cli("--data", "no/such/folder", "--weights", "none", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.splitlines()
                                                  if line.startswith("error: ")]
    assert "no/such/folder" in result.stderr and "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_without_data_writes_demo_folders_and_report(tmp_path):
    result = cli("--tasks", DEMO_TASKS[0], "--epochs", "1", "--arch", "resnet18", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "demo settings:" in result.stdout
    assert (tmp_path / "demo_data" / "rolling_releases" / "database_2.sqlite").exists()
    assert "results in demo_result/ and weights in demo_weight/" in result.stdout
    assert (tmp_path / "demo_result" / "report.md").read_text() in result.stdout
    assert (tmp_path / "demo_result" / "figures" / "per_task_accuracy.png").is_file()
    assert len(read_csv(tmp_path / "demo_result" / "Ghost_reduced_v1.csv")) == 1
    assert list((tmp_path / "demo_weight").glob("*_Ghost_reduced_v1.pt"))
    assert not (tmp_path / "result").exists() and not (tmp_path / "weight").exists()  # a real run's folders


def test_check_flag_exits_zero_when_sound_and_one_naming_each_mismatch(data, tmp_path, capsys):
    args = ["--data", str(data), "--stat", str(data / "stat.csv"), "--workers", "0", "--check",
            "--result", str(tmp_path / "result")]
    assert main.main(args) == 0
    assert "check passed for 4 task(s)" in capsys.readouterr().out
    assert (tmp_path / "result" / TASKS[0] / "manifest.csv").is_file()

    stat = tmp_path / "stat.csv"
    lines = (data / "stat.csv").read_text().splitlines()
    fields = lines[1].split(",")
    fields[4] = str(int(fields[4]) + 1)  # one train image more than the data holds
    stat.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    assert main.main([*args, "--stat", str(stat)]) == 1
    captured = capsys.readouterr()
    assert f"mismatch: {fields[2]}: {int(fields[4]) - 1} train images, the stat file says {fields[4]}" in captured.err
    assert "check FAILED: 1 mismatch(es) in 4 task(s)" in captured.out
