"""--tune: the held-out split, the coordinate search and its choice, the registry's search spaces, the option's
mistakes, and a tuned run end to end (its tables, records, resume, and that no validation image is read before the
first real task)."""
import csv
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import dataset.preprocess
import main
from dataset.sources import open_data
from network import REGISTRY, Family, method_options
from network.methods import TUNED_LR
from tests.helpers import SMALL_TASKS, Kill, assert_same_states, small_args, tensors_in
from training.settings import Recipe
from training.tuning import HELD_OUT, Search, held_out_sample, trial_name


def test_the_held_out_tenth_is_a_seeded_stratified_part_of_the_training_images(data):
    source = open_data(data, data / "stat.csv")
    sample = source.sample(source.tasks[0])
    split = held_out_sample(sample, seed=7)
    assert sorted(split.train + split.val) == sorted(sample.train)
    assert not set(split.train) & set(split.val) and not set(split.val) & set(sample.val)
    for label in range(sample.num_classes):
        count = sum(1 for _, other in sample.train if other == label)
        assert sum(1 for _, other in split.val if other == label) == max(1, round(count * HELD_OUT))
    assert held_out_sample(sample, seed=7) == split
    assert held_out_sample(sample, seed=8).val != split.val
    assert [item for item in sample.train if item in set(split.train)] == list(split.train)  # the run's order kept


def search_with_scores(method: str, scores: dict[str, float], lr: float = 1e-3) -> Search:
    """A Search whose trials' scores are given by name, without training."""
    ctx = SimpleNamespace(method=method, recipe=Recipe(lr=lr), options=method_options(method))

    class Scored(Search):
        def score(self, values):
            return {"score": scores[trial_name(values)]}

    return Scored(ctx, [])


def test_the_search_goes_one_coordinate_at_a_time_and_ties_go_to_the_untuned_value():
    scores = {"lr=3e-05,ewc_lambda=10": 0.5, "lr=0.0001,ewc_lambda=10": 0.8, "lr=0.0003,ewc_lambda=10": 0.7,
              "lr=0.001,ewc_lambda=10": 0.6, "lr=0.0001,ewc_lambda=1": 0.8, "lr=0.0001,ewc_lambda=100": 0.9,
              "lr=0.0001,ewc_lambda=1000": 0.9, "lr=0.0001,ewc_lambda=5000": 0.1}
    search = search_with_scores("EWC", scores)
    assert [trial_name(values) for values in search.stage_trials(0)] == list(scores)[:4]  # λ at its default
    assert search.choice(1) == {"lr": 1e-4}
    assert [values["lr"] for values in search.stage_trials(1)] == [1e-4] * 5  # at the chosen rate
    assert search.choice() == {"lr": 1e-4, "ewc_lambda": 100.0}  # the first of two equal scores
    assert len(search.tried()) == 8  # 4 + 5, less the configuration both stages share
    scores["lr=0.0001,ewc_lambda=100"] = scores["lr=0.0001,ewc_lambda=10"] = 0.95
    assert search.choice()["ewc_lambda"] == 10.0  # a tie with the default keeps the default
    sgd = search_with_scores("SGD", {"lr=3e-05": 0.9, "lr=0.0001": 0.9, "lr=0.0003": 0.9, "lr=0.001": 0.9})
    assert sgd.choice() == {"lr": 1e-3} and len(sgd.tried()) == 4


def test_every_shared_method_declares_a_search_that_holds_its_defaults():
    for spec in REGISTRY.values():
        if spec.family is Family.ISOLATED:
            assert not spec.search
            continue
        assert list(spec.search)[0] == TUNED_LR and Recipe().lr in spec.search[TUNED_LR]
        for name, grid in spec.search.items():
            assert list(grid) == sorted(grid) and len(grid) >= 3
            if name != TUNED_LR:
                assert spec.options[name].default in grid and all(spec.options[name].problem(v) is None for v in grid)
    assert REGISTRY["EWC"].search["ewc_lambda"][-1] >= 5000  # FACIL's λ for EWC
    assert 0.75 in REGISTRY["PackNet"].search["packnet_prune"] and 0.5 in REGISTRY["PackNet"].search["packnet_prune"]


@pytest.mark.parametrize("args, message", [
    (["--method", "Ghost_reduced_v1", "--tune"], "none is among the methods chosen"),
    (["--method", "EWC", "--tune", "--ewc-lambda", "5"], "--tune chooses --ewc-lambda for --method EWC"),
    (["--method", "SGD", "--tune-tasks", "2"], "--tune-tasks goes with --tune"),
    (["--method", "SGD", "--tune", "--tune-tasks", "0"], "argument --tune-tasks: must be positive"),
])
def test_tuning_mistakes_are_one_line_errors(data, capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        main.main(["--data", str(data), "--stat", str(data / "stat.csv"), *args])
    assert stop.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors


# ---- a tuned run, end to end ----

SMALL_GRIDS = {"SGD": {"lr": (1e-4, 1e-3)}, "SI": {"lr": (1e-4, 1e-3), "si_c": (0.1, 1.0)}}
TUNING_TASKS = 2


@pytest.fixture(scope="module")
def small_grids():
    """Two values per coordinate, so that the run end to end stays small."""
    with pytest.MonkeyPatch.context() as patch:
        for method, grid in SMALL_GRIDS.items():
            patch.setitem(REGISTRY, method, dataclasses.replace(REGISTRY[method], search=grid))
        yield


def tuned_args(small_tasks, out, *extra):
    """SGD and SI (a method with a second coordinate whose importance costs no extra pass over the images), one
    epoch a task."""
    return small_args(small_tasks, out, "SGD", "--method", "SGD", "SI", "--tune", "--tune-tasks",
                      str(TUNING_TASKS), "--epochs", "1", *extra)


@pytest.fixture(scope="module")
def tuned(small_tasks, small_grids, tmp_path_factory):
    """``--method SGD SI --tune --seeds 0 1`` on the small cut, recording every decode of images in order."""
    out = tmp_path_factory.mktemp("tuned")
    decoded = []
    real_decode = dataset.preprocess._decode_task

    def recording(root, sample, *args):
        decoded.append(sample)
        return real_decode(root, sample, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset.preprocess, "_decode_task", recording)
        assert main.main(tuned_args(small_tasks, out, "--seeds", "0", "1")) == 0
    return out, decoded


def weights_in(folder, method):
    """Every .pt file of ``method`` directly in a weight folder, loaded."""
    return {path.name: torch.load(path, weights_only=True) for path in sorted(folder.glob(f"*{method}*.pt"))}


def table_of(result, method):
    with (result / "tuning" / f"{method}.csv").open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_a_tuned_run_records_its_choice_and_every_configuration_tried(tuned):
    out, _ = tuned
    for seed in (0, 1):
        result, weight = out / "result" / f"seed_{seed}", out / "weight" / f"seed_{seed}"
        for method, trials in (("SGD", 2), ("SI", 3)):
            rows = table_of(result, method)
            assert len(rows) == trials
            best = max(float(row["score"]) for row in rows)
            (chosen,) = [row for row in rows if row["chosen"] == "1"]
            assert float(chosen["score"]) == best
            for row in rows:
                accuracies = [float(row[f"{order}_{name}"]) for order, name in
                              (task.split("_", 1) for task in SMALL_TASKS[:TUNING_TASKS])]
                assert float(row["score"]) == pytest.approx(sum(accuracies) / TUNING_TASKS, abs=1e-4)
                trial = ",".join(f"{name}={row[name]}" for name in SMALL_GRIDS[method])
                score = json.loads((result / "tuning" / method / trial / "score.json").read_text())
                assert f"{score['score']:.4f}" == row["score"]
                assert not (weight / "tuning" / method / trial).exists()  # a scored trial's weights are dropped
            for task in SMALL_TASKS:
                config = weights_in(weight, method)[f"{task}_{method}.pt"]["config"]
                assert config["tuning"] == {"tasks": SMALL_TASKS[:TUNING_TASKS], "held_out": HELD_OUT,
                                            "configurations": trials}
                assert f"{config['lr']:g}" == chosen["lr"]
                if method == "SI":
                    assert f"{config['si_c']:g}" == chosen["si_c"]
        report = (result / "report.md").read_text()
        assert "## Tuning" in report and f"**SI** chose lr {chosen['lr']}, si_c {chosen['si_c']} of 3 " \
               "configurations" in report
    top = (out / "result" / "report.md").read_text()
    tuning = top.split("## Tuning", 1)[1].split("\n## ", 1)[0]
    assert "| method | seed 0 | seed 1 |" in tuning and "| SI | lr " in tuning


@pytest.mark.slow
def test_no_validation_image_is_read_before_the_first_real_task(tuned, small_tasks):
    _, decoded = tuned
    source = open_data(small_tasks, None)
    real = {source.sample(task).val for task in source.tasks}
    first_real = next(i for i, sample in enumerate(decoded) if sample.val in real)
    assert first_real > 0  # tuning decoded its own images first
    validation = {path for sample in (source.sample(task) for task in source.tasks) for path, _ in sample.val}
    assert not any(path in validation for sample in decoded[:first_real] for path in sample.paths)
    assert {sample.task.name for sample in decoded[:first_real]} == set(SMALL_TASKS[:TUNING_TASKS])


@pytest.mark.slow
def test_a_killed_tuning_resumes_to_the_same_choice_and_files(tuned, small_tasks, small_grids, tmp_path, monkeypatch,
                                                            capsys):
    reference, _ = tuned
    kill = Kill(monkeypatch, at_call=4)  # in the second trial of SGD's tuning, in its second task
    assert main.main(tuned_args(small_tasks, tmp_path, "--method", "SGD", "--seed", "0")) == 130
    trial = tmp_path / "weight" / "tuning" / "SGD" / "lr=0.001"
    assert sorted(path.name for path in trial.iterdir()) == [f"{SMALL_TASKS[0]}_SGD.pt", "SGD_after_task.pt"]
    assert not (tmp_path / "result" / "tuning" / "SGD.csv").exists()
    kill.disarm()
    capsys.readouterr()
    assert main.main(tuned_args(small_tasks, tmp_path, "--method", "SGD", "--seed", "0")) == 0
    tuning = capsys.readouterr().out.split("--tune chose", 1)[0]
    assert "lr=0.001 scored" in tuning and f"] {SMALL_TASKS[0]} " not in tuning  # no task learnt twice
    ours, theirs = table_of(tmp_path / "result", "SGD"), table_of(reference / "result" / "seed_0", "SGD")
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in ours] == \
           [{k: v for k, v in row.items() if k != "seconds"} for row in theirs]
    mine, theirs = weights_in(tmp_path / "weight", "SGD"), weights_in(reference / "weight" / "seed_0", "SGD")
    after = "SGD_after_task.pt"
    assert all(torch.equal(a, b) for a, b in zip(tensors_in(mine.pop(after)), tensors_in(theirs.pop(after)),
                                                 strict=True))
    assert_same_states(mine, theirs)
    capsys.readouterr()
    assert main.main(tuned_args(small_tasks, tmp_path, "--method", "SGD", "--seed", "0")) == 0  # all done: no trial
    assert "tuning SGD" not in capsys.readouterr().out
