"""benchmarks/acceptance.py: --quick runs every step on the CPU, each passes and lands in the JSON and the table; the
task-log parsing its GPU figures rest on; and a failing step's record and exit status."""
import json
import math
from pathlib import Path

import pytest

from benchmarks import acceptance

LABELS = {"parity": "parity bf16 / fp32", "speed": "speed.py", "torchrun": "torchrun on one device",
          "run": "verified run", "nan": "NaN stop", "projection": "53 tasks × 60 epochs, one device"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    result = tmp_path_factory.mktemp("acceptance") / "result"
    code = acceptance.main(["--quick", "--result", str(result)])
    return code, result


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


def test_quick_writes_a_table_with_every_step(quick):
    _, result = quick
    table = (result / "acceptance_cpu.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(LABELS.values())
    assert all(" | passed | " in row for row in rows)
    assert (result / "acceptance_cpu_logs" / "torchrun_2.log").exists()


def write_log(path: Path, rank: int, epochs: list[tuple[str, float]], peak: str | None) -> None:
    lines = [f"2026-11-29 10:00:00 learnt by process {rank} of 2 on host",
             "2026-11-29 10:00:00 images: 100 train, 10 val; 5 classes"]
    lines += [f"{stamp} epoch {k}/{len(epochs)}: train loss 1.0, train acc 0.5, val acc 0.5, best 0.5 at epoch 1 "
              f"({seconds:.1f}s)" for k, (stamp, seconds) in enumerate(epochs, 1)]
    lines += [f"2026-11-29 10:00:09 best epoch 1: val acc 0.5, peak GPU memory {peak} MiB"] if peak else []
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")


def test_rates_and_peak_memory_come_from_the_task_logs(tmp_path):
    method = acceptance.METHOD
    # process 0: two tasks, process 1: one; every epoch after a task's first is timed
    write_log(tmp_path / "a" / f"{method}.log", 0, [("2026-11-29 10:00:04", 4.0), ("2026-11-29 10:00:06", 2.0),
                                                     ("2026-11-29 10:00:08", 2.0)], "1,234")
    write_log(tmp_path / "b" / f"{method}.log", 0, [("2026-11-29 10:00:12", 4.0), ("2026-11-29 10:00:13", 1.0)],
              "2000.5")
    write_log(tmp_path / "c" / f"{method}.log", 1, [("2026-11-29 10:00:05", 5.0), ("2026-11-29 10:00:10", 5.0)],
              None)
    logs = acceptance.read_task_logs(tmp_path)
    rates = acceptance.training_rates(logs)
    assert rates["per_process_train_images_per_s"] == pytest.approx([300 / 5, 100 / 5])
    assert rates["train_images_per_s"] == pytest.approx(80)
    assert rates["train_images_per_s_window"] == pytest.approx(700 / 13)  # 10:00:00 to 10:00:13
    assert rates["tasks_per_process"] == [2, 1]
    assert acceptance.peak_memory(logs) == {"per_process_mib": [2000.5, None], "max_mib": 2000.5}


def test_a_failed_step_is_recorded_and_the_exit_status_says_so(tmp_path, capsys):
    # projection alone has nothing measured to project from: it fails, and the report says why
    assert acceptance.main(["--quick", "--steps", "projection", "--result", str(tmp_path)]) == 1
    step = json.loads((tmp_path / "acceptance_cpu.json").read_text())["steps"]["projection"]
    assert step["status"] == "failed" and "nothing measured" in step["error"]
    assert "**failed**" in (tmp_path / "acceptance_cpu.md").read_text()
    assert "FAILED: projection" in capsys.readouterr().out
