"""The one registry of methods: every --method has one spec, declared and registered by the method's own module,
options are checked in one place and refused for another method, the CLI, the docs and the report read the
registry, and a new method is one new file."""
import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import continual  # noqa: F401  (the shared-backbone methods register as it is imported)
import main
from common.cli import Option
from common.errors import NetworkError
from network import (DEFAULT_METHOD, METHOD_SETS, METHODS, REGISTRY, Family, build_model, load_backbone,
                     method_options, method_spec, methods_of)
from network.layers import ReprogrammedConv
from network.methods import options_markdown, register
from report.methods import display_name, method_label, paper_order
from training.shared_method import Method

ROOT = Path(__file__).resolve().parent.parent
ISOLATED = ["Ghost_reduced_v1", "Ghost", "Ghost_reduced_v2", "Linear", "Finetune", "Ghost_a", "li18", "li50",
            "Resnet_Scratch", "Piggyback", "SupSup"]
SHARED = ["SGD", "EWC", "LwF", "ER", "SI", "PSP", "PackNet"]


def known(names, *more: str) -> list[str]:
    """``names`` in their order, less any method added since this list was written (a new method is a new file,
    tested by its own test file), keeping ``more``."""
    return [name for name in names if name in {*ISOLATED, *SHARED, *more}]


def test_every_method_has_one_spec_and_one_family():
    assert list(REGISTRY)[:2] == ["Ghost_reduced_v1", "Ghost"]  # CLR is the default, CLR-Full next
    assert set(methods_of(Family.ISOLATED)) | set(methods_of(Family.SHARED)) == set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.citation and spec.learns
        assert (spec.layers is None) == (spec.family is Family.SHARED) == (spec.implementation is not None)
        assert all(name.startswith(spec.name.lower() + "_") for name in spec.options)
    for method in methods_of(Family.SHARED):  # its code is its own module's class, named as the method
        code = method_spec(method).implementation
        assert issubclass(code, Method) and code.__name__ == method and code.__module__ == f"continual.{method.lower()}"
    assert method_spec("li18").arch == "resnet18" and method_spec("SupSup").weights == "none"


def test_the_registry_keeps_the_methods_order_and_the_papers_set():
    """The specs' own order numbers give --help, the report's columns and docs/options.md their order; their paper
    columns give the paper set."""
    assert list(REGISTRY) == list(METHODS) and known(REGISTRY) == ISOLATED + SHARED
    assert [spec.order for spec in REGISTRY.values()] == sorted(spec.order for spec in REGISTRY.values())
    assert METHOD_SETS == {"paper": ("Ghost_reduced_v1", "Ghost", "SGD", "EWC", "LwF", "ER", "SI", "PSP", "PackNet",
                                     "Piggyback", "SupSup")}
    assert DEFAULT_METHOD == ISOLATED[0]


def test_importing_network_alone_registers_the_isolated_methods_and_continual_the_rest():
    script = "import network; print(*network.METHODS); import continual; print(*network.METHODS)"
    lines = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    isolated, every = (line.split() for line in lines)
    assert isolated == list(methods_of(Family.ISOLATED)) and every == list(REGISTRY)
    assert known(isolated) == ISOLATED and known(every) == ISOLATED + SHARED


@pytest.mark.parametrize("method, change, error", [
    ("EWC", {}, r"^two methods are named EWC$"),
    ("EWC", {"name": "Ewc2", "options": {}, "search": {"lr": (1e-3,)}},
     r"^Ewc2 takes order 130, which EWC has: choose a free number$"),
    ("EWC", {"name": "Other", "order": 999, "options": {}, "search": {"lr": (1e-3,)}},
     r"^Other takes paper column 4, which EWC has$"),
    ("EWC", {"name": "Ewc", "order": 999, "paper_column": None}, r"^Ewc declares --ewc-gamma, an option of EWC$"),
    ("SGD", {"name": "paper", "order": 999, "paper_column": None}, r"^paper names a set of methods"),
    ("SGD", {"name": "NoCode", "order": 999, "paper_column": None, "implementation": None},
     r"^NoCode: a shared-backbone method registers with its code"),
    ("Linear", {"name": "WithCode", "order": 999, "implementation": Method},
     r"^WithCode: an isolated method's code is its layers"),
])
def test_register_refuses_a_taken_name_order_paper_column_or_option(method, change, error):
    before = dict(REGISTRY), dict(METHOD_SETS)
    with pytest.raises(ValueError, match=error):
        register(dataclasses.replace(REGISTRY[method], **change))
    assert (dict(REGISTRY), dict(METHOD_SETS)) == before


NEW_ISOLATED = """
    from torch import nn

    from common.cli import Option
    from network.layers import ReprogrammedConv
    from network.methods import ISOLATED, MethodSpec, TaskLayers, register


    def _kernel(conv: nn.Conv2d, options: dict) -> nn.Module | None:
        return None if conv.kernel_size == (1, 1) else ReprogrammedConv(conv, options["wide_kernel"])


    register(MethodSpec("Wide", ISOLATED, "a wider CLR kernel", "a test", order=115,
                        options={"wide_kernel": Option(5, "Wide: the kernel size (default %(default)s)")},
                        layers=TaskLayers(_kernel)))
"""
NEW_SHARED = """
    from training.shared_method import Method
    from network.methods import LR_SEARCH, SHARED, TUNED_LR, MethodSpec, implements

    SPEC = MethodSpec("Plain", SHARED, "the whole backbone", "a test", order=185, search={TUNED_LR: LR_SEARCH})


    @implements(SPEC)
    class Plain(Method):
        pass
"""


@pytest.fixture
def new_methods(tmp_path, monkeypatch):
    """A package that discovers its modules as network.isolated and continual do, with one new method per file,
    imported; the registry as it was afterwards."""
    package = tmp_path / "new_methods"
    package.mkdir()
    (package / "__init__.py").write_text("from network.methods import discover\n\ndiscover(__name__, __path__)\n")
    (package / "wide.py").write_text(textwrap.dedent(NEW_ISOLATED))
    (package / "plain.py").write_text(textwrap.dedent(NEW_SHARED))
    monkeypatch.syspath_prepend(tmp_path)
    before = dict(REGISTRY), dict(METHOD_SETS)
    try:
        yield __import__("new_methods")
    finally:
        for saved, now in zip(before, (REGISTRY, METHOD_SETS)):
            now.clear()
            now.update(saved)
        for name in [name for name in sys.modules if name.split(".")[0] == "new_methods"]:
            del sys.modules[name]


def test_a_new_method_is_one_new_file(new_methods):
    # each in its place by its order number
    assert known(REGISTRY, "Wide", "Plain") == [*ISOLATED, "Wide", *SHARED, "Plain"]
    assert method_spec("Plain").implementation is new_methods.plain.Plain
    assert METHOD_SETS["paper"][0] == DEFAULT_METHOD and "Wide" not in METHOD_SETS["paper"]
    assert "| `--wide-kernel` | `Wide` | 5 | [0, ∞) |" in options_markdown().splitlines()
    shown = " ".join(main.get_args_parser().format_help().split())
    assert "Wide: a wider CLR kernel" in shown and "--wide-kernel" in shown
    args = main.parse_args(["--method", "Wide", "Plain", "--wide-kernel", "3"])
    assert [(m.method, m.options) for m in args.methods] == [("Wide", {"wide_kernel": 3}), ("Plain", {})]
    model = build_model(load_backbone("resnet18", "none"), "Wide", 3, {"wide_kernel": 3})
    kernels = [module for module in model.modules() if isinstance(module, ReprogrammedConv)]
    assert len(kernels) == 1 + 8 * 2 and kernels[0].clr.kernel_size == (3, 3)  # the stem and every 3x3 conv


def test_the_cli_offers_exactly_the_registrys_methods_and_options():
    parser = main.get_args_parser()
    method = next(action for action in parser._actions if "--method" in action.option_strings)
    assert tuple(method.choices) == (*REGISTRY, *METHOD_SETS)  # every method, then the named sets
    flags = {option for action in parser._actions for option in action.option_strings}
    for spec in REGISTRY.values():
        for name in spec.options:
            assert "--" + name.replace("_", "-") in flags


def test_the_report_names_methods_from_the_registry():
    assert display_name("Ghost_reduced_v1") == "CLR" and display_name("Ghost") == "CLR-Full"
    assert method_label("Ghost") == "CLR-Full (Ghost)" and method_label("EWC") == "EWC"
    assert display_name("MyMethod") == "MyMethod"  # a CSV of a method this version does not know
    assert paper_order(["zeta", "PackNet", "Linear", "Ghost", "Ghost_reduced_v1", "alpha"]) == \
        ["Ghost_reduced_v1", "Ghost", "Linear", "PackNet", "alpha", "zeta"]


@pytest.mark.parametrize("option, value, problem", [
    (Option(0.5, "", high=1, bounds="(]"), 0, "must be in (0, 1]"),
    (Option(0.5, "", high=1, bounds="(]"), 1.5, "must be in (0, 1]"),
    (Option(0.5, "", high=1, bounds="[)"), 1, "must be in [0, 1)"),
    (Option(1.0, ""), -1, "must be zero or more"),
    (Option(1.0, "", bounds="(]"), 0, "must be positive"),
    (Option(1.0, ""), float("nan"), "must be zero or more"),
])
def test_an_option_out_of_range_says_its_range(option, value, problem):
    assert option.problem(value) == problem


@pytest.mark.parametrize("option, value", [(Option(0.5, "", high=1, bounds="(]"), 1), (Option(0.5, "", high=1,
                                           bounds="[)"), 0), (Option(1.0, ""), 0), (Option(10, ""), 10**6)])
def test_an_option_in_range_passes(option, value):
    assert option.problem(value) is None


def test_method_options_fill_defaults_and_refuse_another_methods():
    assert method_options("PackNet") == {"packnet_keep": 0.5, "packnet_prune": 0.75, "packnet_retrain_epochs": 10,
                                         "packnet_retrain_lr": 1e-4}
    assert method_options("EWC", {"ewc_lambda": 3.0}) == {"ewc_lambda": 3.0, "ewc_gamma": 1.0}
    assert method_options("Ghost_reduced_v1") == {}
    with pytest.raises(NetworkError, match=r"^--si-c is an option of --method SI, not of --method Piggyback$"):
        method_options("Piggyback", {"si_c": 1.0})
    with pytest.raises(NetworkError, match=r"^--foo-bar is not an option of any method, not of --method EWC$"):
        method_options("EWC", {"foo_bar": 1.0})
    with pytest.raises(NetworkError, match=r"^--supsup-sparsity must be in \(0, 1\], got 2$"):
        method_options("SupSup", {"supsup_sparsity": 2})


def test_build_model_checks_options_and_refuses_a_shared_backbone_method():
    backbone = load_backbone("resnet18", "none")
    with pytest.raises(NetworkError, match=r"^--piggyback-threshold must be in \[0, 1\), got 1$"):
        build_model(backbone, "Piggyback", 3, {"piggyback_threshold": 1})
    with pytest.raises(NetworkError, match=r"^--method EWC trains one backbone across the tasks"):
        build_model(backbone, "EWC", 3)


@pytest.mark.parametrize("argv, error", [
    (["--method", "Piggyback", "--si-c", "1"], "error: --si-c is an option of --method SI, not of --method Piggyback"),
    (["--ewc-lambda", "2"], "error: --ewc-lambda is an option of --method EWC, not of --method Ghost_reduced_v1"),
    (["--method", "PackNet", "--packnet-prune", "1"], "error: argument --packnet-prune: must be in [0, 1), got 1"),
    (["--method", "PackNet", "--packnet-keep", "0"], "error: argument --packnet-keep: must be in (0, 1], got 0"),
    (["--method", "li18", "--arch", "resnet50"], "error: --method li18 means --arch resnet18, not resnet50"),
    (["--method", "EWC", "Linear", "--si-c", "1"],
     "error: --si-c is an option of --method SI, which is not among the methods chosen (EWC, Linear)"),
    (["--method", "Linear", "--si-c", "1"], "error: --si-c is an option of --method SI, not of --method Linear"),
    (["--seed", "1", "--seeds", "1", "2"], "error: give --seed or --seeds, not both"),
    (["--seeds", "1", "2", "1"], "error: --seeds lists seed 1 more than once"),
    (["--method", "CLR"], "error: argument --method: invalid choice: 'CLR'"),
    (["--predict", "x.png", "--task", "a", "--method", "EWC", "SGD"], "error: --predict takes one --method"),
    (["--predict", "x.png", "--task", "a", "--method", "paper"], "error: --predict takes one --method"),
])
def test_the_command_line_refuses_in_one_line(argv, error, capsys):
    with pytest.raises(SystemExit) as stopped:
        main.parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1


def test_the_command_line_gives_the_methods_options_to_the_run():
    args = main.parse_args(["--method", "EWC", "--ewc-gamma", "0.5"])
    assert [(m.method, m.options) for m in args.methods] == [("EWC", {"ewc_lambda": 10.0, "ewc_gamma": 0.5})]
    assert main.parse_args(["--method", "Ghost"]).methods[0].options == {}


def test_several_methods_each_get_their_own_options_backbone_and_the_named_set_spells_out():
    args = main.parse_args(["--data", "D", "--method", "EWC", "SupSup", "EWC", "PackNet", "--packnet-prune", "0.5"])
    assert [(m.method, m.weights, m.options) for m in args.methods] == [
        ("EWC", "imagenet", {"ewc_lambda": 10.0, "ewc_gamma": 1.0}), ("SupSup", "none", {"supsup_sparsity": 0.5}),
        ("PackNet", "imagenet", {"packnet_keep": 0.5, "packnet_prune": 0.5, "packnet_retrain_epochs": 10,
                                 "packnet_retrain_lr": 1e-4})]
    paper = main.parse_args(["--method", "paper"]).methods
    assert [m.method for m in paper] == list(METHOD_SETS["paper"])
    assert {m.method for m in paper} <= set(REGISTRY) and paper[0].method == DEFAULT_METHOD
    assert main.parse_args([]).seeds == [0] and main.parse_args(["--seed", "4"]).seeds == [4]
    assert main.parse_args(["--seeds", "3", "1"]).seeds == [3, 1]


def test_the_options_page_holds_the_registrys_table():
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    table = re.search(r"python -m network.methods.*?-->\n(.*?)\n<!-- end of generated table -->", text, re.S)
    assert table and table.group(1) == options_markdown()


def code_files() -> list[Path]:
    """The project's Python code: main.py and every folder's modules, less the tests (and hidden folders, such as
    a virtual environment inside the checkout)."""
    return [ROOT / "main.py"] + sorted(path for path in ROOT.glob("*/**/*.py")
                                       if path.relative_to(ROOT).parts[0] not in {"tests"}
                                       and not path.relative_to(ROOT).parts[0].startswith("."))


@pytest.mark.parametrize(("method", "module"), [("MAS", "continual/mas.py"), ("EFT", "network/isolated/eft.py")])
def test_a_method_added_as_one_file_is_named_in_no_other_code_file(method, module):
    naming = [str(path.relative_to(ROOT)) for path in code_files()
              if re.search(rf"\b{method}\b", path.read_text(encoding="utf-8"))]
    assert naming == [module]
