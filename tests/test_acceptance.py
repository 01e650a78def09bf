"""benchmarks/acceptance.py: --quick runs every step on the CPU, each passes and lands in the JSON and the table; the
metrics-file reading its GPU figures rest on; and a failing step's record and exit status."""
import json
import math

import pytest

from benchmarks import acceptance
from training.metrics import write_epochs
from training.settings import Layout

LABELS = {"parity": "parity bf16 / fp32", "speed": "speed.py", "torchrun": "torchrun on one device",
          "run": "verified run", "nan": "NaN stop", "projection": "53 tasks × 60 epochs, one device"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    result = tmp_path_factory.mktemp("acceptance") / "result"
    code = acceptance.main(["--quick", "--result", str(result)])
    return code, result


@pytest.mark.slow
def test_quick_runs_every_step_and_reports_positive_figures(quick):
    code, result = quick
    report = json.loads((result / "acceptance_cpu.json").read_text())
    steps = report["steps"]
    assert list(steps) == list(acceptance.STEPS)
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(acceptance.STEPS, "passed"), \
        {name: (step["error"], step["tail"]) for name, step in steps.items()}
    assert code == 0 and report["passed"] is True
    assert report["device_type"] == "cpu" and report["torch"] and report["date"] and "--quick" in report["command"]
    assert all(positive(step["seconds"]) for step in steps.values()) and positive(report["wall_seconds"])

    parity = steps["parity"]["figures"]
    # --quick's one-epoch runs only show that both precisions run (the CPU's bf16 autocast is real): not judged
    assert parity["limit_points"] is None and acceptance.GPU.parity_points == 1.0
    expected_gap = 100 * sum(parity["best_acc_bf16"][t] - parity["best_acc_fp32"][t] for t in parity["tasks"]) / 3
    assert parity["mean_gap_points"] == pytest.approx(expected_gap)
    assert all(positive(acc) for acc in [*parity["best_acc_bf16"].values(), *parity["best_acc_fp32"].values()])

    speed = steps["speed"]["figures"]
    assert set(speed) == {"plain", "compile"}
    for figures in speed.values():
        assert all(positive(figures[kind][path]) for kind in ("train_images_per_s", "eval_images_per_s")
                   for path in "abc")
        assert all(positive(figures[ratio]) for ratio in ("train_b_over_a", "train_b_over_c", "eval_b_over_a",
                                                          "eval_b_over_c"))
    assert speed["plain"]["compile_seconds"] is None and positive(speed["compile"]["compile_seconds"])

    torchrun = steps["torchrun"]["figures"]["processes"]
    assert set(torchrun) == {"1", "2"}
    for procs, figures in torchrun.items():
        assert positive(figures["train_images_per_s"]) and len(figures["per_process_train_images_per_s"]) == int(procs)
        assert sum(figures["tasks_per_process"]) == 4
        assert figures["peak_gpu_memory"]["max_mib"] is None  # no GPU, no peak

    run = steps["run"]["figures"]
    assert run["verified_tasks"] == 3 and positive(run["train_images_per_s"])
    nan = steps["nan"]["figures"]
    assert nan["exit_status"] == 2 and len(nan["error_lines"]) == 1 and nan["weights_files"] == []
    projection = steps["projection"]["figures"]
    assert set(projection["hours"]) == {"torchrun_1", "torchrun_2", "speed_b_plain", "speed_b_compile"}
    assert all(positive(hours) for hours in projection["hours"].values())


@pytest.mark.slow
def test_quick_writes_a_table_with_every_step(quick):
    _, result = quick
    table = (result / "acceptance_cpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(LABELS.values())
    assert all(" | passed | " in row for row in rows)
    assert (result / "acceptance_cpu_logs" / "torchrun_2.log").exists()


def write_task(layout: Layout, task: str, train_images: int, process: int, seconds: list[float],
               peaks: list[float | None]) -> None:
    """A task's manifest and its metrics file, as a run of two processes writes them."""
    layout.manifest(task).parent.mkdir(parents=True)
    rows = [("train", f"{task}/train/{k}.jpg", 0) for k in range(train_images)] + [("val", f"{task}/val/0.jpg", 0)]
    layout.manifest(task).write_text("split,path,label\n" + "".join(f"{s},{p},{y}\n" for s, p, y in rows))
    write_epochs(layout.metrics(task, acceptance.METHOD),
                 [{"epoch": k, "loss": 1.0, "train_acc": 0.5, "val_acc": 0.5, "lr": 1e-3,
                   "images_per_s": train_images / wall, "peak_gpu_mib": peak, "wall_s": wall, "best_epoch": 1,
                   "process": process, "world_size": 2} for k, (wall, peak) in enumerate(zip(seconds, peaks), 1)])


def test_rates_and_peak_memory_come_from_the_metrics_files(tmp_path):
    layout = acceptance.run_layout(tmp_path)
    # process 0: two tasks, process 1: one; every epoch after a task's first is timed
    write_task(layout, "a", 100, 0, [4.0, 2.0, 2.0], [1000.0, 1234.0, 900.0])
    write_task(layout, "b", 100, 0, [4.0, 1.0], [2000.5, 1500.0])
    write_task(layout, "c", 100, 1, [5.0, 5.0], [None, None])
    (layout.result / "figures").mkdir()  # a folder of the result without a metrics file
    tasks = acceptance.read_task_metrics(layout)
    assert [(task.task, task.train_images, task.process, len(task.epochs)) for task in tasks] == \
        [("a", 100, 0, 3), ("b", 100, 0, 2), ("c", 100, 1, 2)]
    rates = acceptance.training_rates(tasks)
    assert rates["per_process_train_images_per_s"] == pytest.approx([300 / 5, 100 / 5])
    assert rates["train_images_per_s"] == pytest.approx(80)
    assert rates["train_images_per_s_window"] == pytest.approx(700 / 13)  # process 0's 13 s of epochs
    assert rates["tasks_per_process"] == [2, 1] and rates["epochs"] == 7
    assert acceptance.peak_memory(tasks) == {"per_process_mib": [2000.5, None], "max_mib": 2000.5}


def test_a_failed_step_is_recorded_and_the_exit_status_says_so(tmp_path, capsys):
    # projection alone has nothing measured to project from: it fails, and the report says why
    assert acceptance.main(["--quick", "--steps", "projection", "--result", str(tmp_path)]) == 1
    step = json.loads((tmp_path / "acceptance_cpu.json").read_text())["steps"]["projection"]
    assert step["status"] == "failed" and "nothing measured" in step["error"]
    assert "**failed**" in (tmp_path / "acceptance_cpu.md").read_text()
    assert "FAILED: projection" in capsys.readouterr().out
