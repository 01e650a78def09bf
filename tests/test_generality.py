"""benchmarks/generality.py: one main.py run per configuration, and a table that says what their records say."""
import pytest

from benchmarks import generality
from tests.helpers import SMALL_TASKS, table
from training.record import TaskRecord

CONFIGS = ["clr-train-every", "clr-frozen-skip-depthwise", "linear", "clr-random"]
NORMS = {"clr-train-every": "train", "clr-frozen-skip-depthwise": "frozen", "linear": "frozen"}  # as recorded


@pytest.mark.slow
def test_the_table_has_a_row_per_configuration_with_its_records_figures(small_tasks, tmp_path, capsys):
    text = generality.main_cli(["--arch", "resnet18", "--weights", "none", "--data", str(small_tasks), "--tasks",
                                *SMALL_TASKS[:2], "--image-size", "16", "--epochs", "1", "--device", "cpu",
                                "--configs", *CONFIGS, "--scratch", str(tmp_path)])
    assert text in capsys.readouterr().out
    rows = table(text, "configuration")
    ran = [generality.BY_NAME[name] for name in CONFIGS[:3]]  # --weights none: CLR on a random init is the first row
    assert [row["configuration"] for row in rows] == [configuration.label for configuration in ran]
    for row, configuration in zip(rows, ran):
        folders = generality.layout(tmp_path, configuration)
        records = [TaskRecord.load(folders.weights(task, configuration.method)) for task in SMALL_TASKS[:2]]
        accuracies = [record.best_acc for record in records]
        assert [row[task] for task in SMALL_TASKS[:2]] == [f"{100 * accuracy:.2f}" for accuracy in accuracies]
        assert row["mean"] == f"{100 * sum(accuracies) / 2:.2f}"
        assert row["trainable params per task"] == f"{sum(r.trainable_params for r in records) / 2:,.0f}"
        assert row["stored per task"] == f"{sum(r.stored_bytes for r in records) / 2 / 1024:,.1f} KiB"
        assert {record.config["norm"] for record in records} == {NORMS[configuration.name]}
    clr, frozen, linear = rows
    assert int(linear["trainable params per task"].replace(",", "")) < int(
        frozen["trainable params per task"].replace(",", "")) < int(clr["trainable params per task"].replace(",", ""))
