"""main.py on backbones other than the ResNets, as a user runs it: a timm network and a torchvision one, an
isolated method and a shared-backbone one, a state dict file as --weights, the report's verification and prediction
from the weight folder."""
from pathlib import Path

import pytest
import torch

import main
from network import input_config, load_backbone
from tests.helpers import TASKS, read_csv, run_args

pytest.importorskip("timm")
TIMM_ARCH = "timm:test_efficientnet"  # timm's tiny EfficientNet: TF "same" padding convs and BatchNormAct2d


def record(out: Path, task: str, method: str) -> dict:
    return torch.load(out / "weight" / f"{task}_{method}.pt", weights_only=True)


@pytest.mark.slow
def test_clr_and_ewc_on_a_timm_network_end_to_end(data, tmp_path, capsys):
    args = run_args(data, tmp_path, "--arch", TIMM_ARCH, "--epochs", "1")
    assert main.main(args) == 0
    assert main.main([*args, "--method", "EWC"]) == 0
    saved = record(tmp_path, TASKS[0], "Ghost_reduced_v1")
    assert saved["config"]["arch"] == TIMM_ARCH and saved["config"]["backbone"] == "none:seed0"
    assert saved["preprocess"] == input_config(TIMM_ARCH).as_record()
    assert "classifier.weight" in saved["state"] and "conv_stem.clr.weight" in saved["state"]
    assert set(record(tmp_path, TASKS[1], "EWC")["state"]) == {"classifier.weight", "classifier.bias"}
    report = (tmp_path / "result" / "report.md").read_text()
    assert "2 task(s) re-loaded onto a freshly built backbone and re-evaluated on their validation split: all " \
           "re-evaluated accuracies equal the recorded ones" in report
    assert [row["task_name"] for row in read_csv(tmp_path / "result" / "EWC.csv")] == TASKS
    assert f"note: {TIMM_ARCH}'s weights were made for 160 px images; this run uses 32 px" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v3_small", TIMM_ARCH])
def test_a_saved_state_dict_is_a_backbone_and_its_tasks_predict_from_the_weight_folder(data, tmp_path, arch,
                                                                                       capsys):
    network = load_backbone(arch, "none")
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(0.9)  # other weights than --weights none's
    weights = tmp_path / "mine.pth"
    torch.save(network.state_dict(), weights)
    out = tmp_path / "run"
    assert main.main(run_args(data, out, "--arch", arch, "--weights", str(weights), "--tasks", TASKS[0],
                              "--epochs", "1")) == 0
    assert record(out, TASKS[0], "Ghost_reduced_v1")["config"]["backbone"].startswith("file:mine.pth:")
    image = next((data / "original_images").rglob("*.*"))
    capsys.readouterr()
    assert main.main(["--predict", str(image), "--task", TASKS[0], "--weight", str(out / "weight"),
                      "--weights", str(weights), "--workers", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("path,") and lines[1].startswith(str(image))


def test_a_network_a_method_cannot_serve_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--method", "li50", "--arch", "mobilenet_v3_small"])
    assert capsys.readouterr().err == ("error: --method li50 means --arch resnet50, not mobilenet_v3_small: leave "
                                       "--arch out or pass --arch resnet50 (see --help)\n")
    with pytest.raises(SystemExit):
        main.parse_args(["--arch", "squeezenet1_0"])
    assert capsys.readouterr().err.startswith("error: squeezenet1_0's classifier")
