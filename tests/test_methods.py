"""The one registry of methods: every --method has one spec, options are checked in one place and refused for
another method, the CLI, the docs and the report read the registry."""
import re
from pathlib import Path

import pytest

import continual
import main
from common.cli import Option
from common.errors import NetworkError
from network import (DEFAULT_METHOD, METHOD_SETS, REGISTRY, Family, build_model, load_backbone, method_options,
                     method_spec, methods_of)
from network.methods import options_markdown
from report.methods import display_name, method_label, paper_order

ROOT = Path(__file__).resolve().parent.parent


def test_every_method_has_one_spec_and_one_family():
    assert list(REGISTRY)[:2] == ["Ghost_reduced_v1", "Ghost"]  # CLR is the default, CLR-Full next
    assert set(methods_of(Family.ISOLATED)) | set(methods_of(Family.SHARED)) == set(REGISTRY)
    assert set(methods_of(Family.SHARED)) == set(continual.IMPLEMENTATIONS) == {"SGD", "EWC", "LwF", "ER", "SI",
                                                                                  "PSP", "PackNet"}
    for spec in REGISTRY.values():
        assert spec.citation and spec.learns
        assert (spec.layers is None) == (spec.family is Family.SHARED)
        assert all(name.startswith(spec.name.lower() + "_") for name in spec.options)
    assert method_spec("li18").arch == "resnet18" and method_spec("SupSup").weights == "none"


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
