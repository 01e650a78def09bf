"""The Python API of docs/api.md: its example runs as printed, and a saved task is exactly the task, rebuilt with the
options it was trained with."""
import os
import re
from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v3_small, resnet18, resnet34

from common.cli import Option
from common.errors import NetworkError
from network import LayerPolicy, load_task, parameter_count, reprogram, save_task
from network.layers import ReprogrammedConv
from network.methods import ISOLATED, REGISTRY, MethodSpec, TaskLayers
from training.saved import recorded_options

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(compile(code, "docs/api.md", "exec"), {})
    assert re.fullmatch(r"accuracy \d\.\d\d\n", capsys.readouterr().out)
    saved = torch.load(tmp_path / "my_task.pt", weights_only=True)
    assert saved["method"] == "Ghost_reduced_v1" and saved["num_classes"] == 5
    assert all(name.endswith((".clr.weight", ".weight", ".bias", ".running_mean", ".running_var"))
               for name in saved["state"])
    # the task's tensors only, a few % of MobileNetV3-small's 10 MB (its depthwise convs each get a CLR kernel as
    # large as themselves: docs/methods.md's cost table)
    assert os.path.getsize(tmp_path / "my_task.pt") < 0.03 * 4 * parameter_count(mobilenet_v3_small())


def test_reprogram_trains_exactly_the_task_and_leaves_the_model_alone():
    model = resnet18()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    task = reprogram(model, num_classes=3, method="Ghost")
    trained = {name for name, p in task.named_parameters() if p.requires_grad}
    assert trained == {name for name, _ in task.named_parameters()
                       if ".clr." in name or name.startswith("fc.") or "bn" in name or "downsample.1" in name}
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # the caller's model keeps its own settings


def test_load_task_refuses_what_save_task_did_not_write(tmp_path):
    (tmp_path / "other.pt").write_bytes(b"not a torch file")
    with pytest.raises(NetworkError, match=r"^cannot read .*other.pt \(.*\): not a task saved by save_task$"):
        load_task(resnet18(), tmp_path / "other.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "dict.pt")
    with pytest.raises(NetworkError, match=r"dict.pt is not a task saved by save_task$"):
        load_task(resnet18(), tmp_path / "dict.pt")
    save_task(reprogram(resnet18(), 4), tmp_path / "task.pt")
    with pytest.raises(NetworkError, match=r"^task state is for a different method or architecture"):
        load_task(resnet34(), tmp_path / "task.pt")


def test_a_task_saved_with_a_policy_loads_with_it_and_an_older_file_with_the_methods_own(tmp_path):
    model = mobilenet_v3_small().eval()
    task = reprogram(model, 4, policy=LayerPolicy("affine", "skip-depthwise"))
    with torch.no_grad():
        for parameter in task.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01 * torch.randn_like(parameter))
    save_task(task, tmp_path / "task.pt")
    loaded = load_task(model, tmp_path / "task.pt")
    images = torch.randn(2, 3, 64, 64)
    assert loaded.policy == LayerPolicy("affine", "skip-depthwise")
    assert torch.equal(loaded.eval()(images), task.eval()(images))
    saved = torch.load(tmp_path / "task.pt", weights_only=True)
    del saved["policy"]
    torch.save(saved, tmp_path / "older.pt")
    with pytest.raises(NetworkError, match=r"^task state is for a different method or architecture"):
        load_task(model, tmp_path / "older.pt")  # read as the method's own policy, which this state does not fit


@pytest.fixture
def kernel_size_method(monkeypatch) -> str:
    """A method whose option decides the shape of its tensors: CLR with a kernel of --wide-kernel's size."""
    spec = MethodSpec("Wide", ISOLATED, "a CLR kernel of a chosen size after every conv", "this test", order=999,
                      options={"wide_kernel": Option(3, "the kernel size")},
                      layers=TaskLayers(lambda conv, options: ReprogrammedConv(conv, options["wide_kernel"])))
    monkeypatch.setitem(REGISTRY, "Wide", spec)
    return "Wide"


def test_a_task_is_rebuilt_with_the_options_it_was_saved_with(kernel_size_method, tmp_path):
    model = resnet18().eval()
    task = reprogram(model, 3, kernel_size_method, {"wide_kernel": 5})
    with torch.no_grad():
        task.conv1.clr.weight.add_(0.01 * torch.randn_like(task.conv1.clr.weight))
    save_task(task, tmp_path / "task.pt")
    loaded = load_task(model, tmp_path / "task.pt")
    assert loaded.options == {"wide_kernel": 5} and loaded.conv1.clr.kernel_size == (5, 5)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), task.eval()(images))
    saved = torch.load(tmp_path / "task.pt", weights_only=True)
    del saved["options"]
    torch.save(saved, tmp_path / "older.pt")
    with pytest.raises(NetworkError, match=r"^task state tensor conv1\.clr\.weight has shape \[64, 1, 5, 5\], the "
                                           r"model expects \[64, 1, 3, 3\]$"):
        load_task(model, tmp_path / "older.pt")  # read with the option's default, which this state does not fit


def test_a_record_gives_back_the_options_it_was_trained_with(kernel_size_method):
    config = {"method": kernel_size_method, "lr": 1e-3, "wide_kernel": 7, "piggyback_threshold": 0.1}
    assert recorded_options(config) == {"wide_kernel": 7}  # its own method's only
    assert recorded_options({"method": kernel_size_method}) == {}  # an older record: the defaults then
