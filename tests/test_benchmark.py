"""The speed benchmark runs end to end on the CPU and reports consistent figures (no timing asserted)."""
import json

import pytest

from benchmarks import speed


@pytest.mark.slow
def test_benchmark_reports_every_path_and_consistent_ratios(tmp_path, capsys):
    # CUDA's eval batch (256): more than the task's val split holds, the case that stopped the first GPU run
    speed.main_cli(["--device", "cpu", "--arch", "resnet18", "--image-size", "32", "--steps", "2", "--warmup", "1",
                    "--repeats", "1", "--photo-size", "120", "90", "--eval-batch-size", "256",
                    "--workers", "0", "--result", str(tmp_path)])
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "benchmark_cpu_32px.json").read_text())
    assert set(saved["images_per_s"]) == {"a_release_style", "b_this_project", "c_compute_bound"}
    rates = saved["images_per_s"]
    for path in rates.values():
        assert path["train_images_per_s"] > 0 and path["eval_images_per_s"] > 0
    assert saved["ratios"]["train_b_over_a"] == pytest.approx(
        rates["b_this_project"]["train_images_per_s"] / rates["a_release_style"]["train_images_per_s"])
    assert saved["ratios"]["train_b_over_c"] == pytest.approx(
        rates["b_this_project"]["train_images_per_s"] / rates["c_compute_bound"]["train_images_per_s"])
    assert saved["settings"]["image_size"] == 32 and saved["settings"]["precision"] == "fp32"
    assert saved["settings"]["photo_size"] == [120, 90]
    assert saved["settings"]["eval_batch_size"]["b_c"] == 256
    assert saved["torch"] and saved["device"].startswith("CPU")
    assert saved["reproduction_hours"]["b_this_project"] > 0
    assert "b/c: train" in printed and "53 tasks x 60 epochs" in printed
