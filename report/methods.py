"""Which methods a result folder holds, in the paper's column order, and the names the paper gives them."""
import csv
from pathlib import Path

import continual  # noqa: F401  (the shared-backbone methods register as it is imported)
from dataset.task import TaskInfo
from network import METHODS, REGISTRY
from report.inputs import MethodResults, read_method
from training.families import ISOLATED_FAMILY, family_of
from training.results import CSV_HEADER
from training.settings import Layout


def display_name(method: str) -> str:
    """The paper's name where it has one (CLR, CLR-Full), else the method's own (a CSV of a method this version
    does not know keeps its name)."""
    return REGISTRY[method].display_name if method in REGISTRY else method


def method_label(method: str) -> str:
    return REGISTRY[method].label if method in REGISTRY else method


def accuracy_kind(method: str) -> str:
    """Which accuracy the method's per-task values (<method>.csv) are, as its family says: the best validation
    accuracy, or the accuracy after the last task of a method that carries one backbone across tasks; a method this
    version does not know keeps its best validation accuracy."""
    return (family_of(method) if method in REGISTRY else ISOLATED_FAMILY).accuracy_kind


def accuracy_label(method: str) -> str:
    """The method's name with what its per-task accuracy is, for a figure's legend or axis."""
    return f"{display_name(method)} ({accuracy_kind(method)})"


def paper_order(methods: list[str]) -> list[str]:
    """The registry's order (CLR, CLR-Full, the other isolated methods, the shared-backbone ones), then any others
    by name."""
    known = list(METHODS)
    return sorted(methods, key=lambda m: (known.index(m), "") if m in known else (len(known), m))


def is_result_csv(layout: Layout, path: Path) -> bool:
    """A <method>.csv: named like one and starting with the results header."""
    if layout.method_of_csv(path) is None:
        return False
    with path.open(newline="") as file:
        return next(csv.reader(file), None) == CSV_HEADER


def find_methods(layout: Layout) -> list[str]:
    """Every method with a results CSV in the result folder, in the paper's order; no closed list of names."""
    if not layout.result.is_dir():
        return []
    return paper_order([layout.method_of_csv(path) for path in layout.result.glob("*.csv")
                        if is_result_csv(layout, path)])


def read_methods(layout: Layout, tasks: list[TaskInfo]) -> list[MethodResults]:
    """Every method in the result folder that finished at least one of ``tasks``, in the paper's order: what one
    run's report covers, and what each seed contributes to the report across seeds."""
    results = [read_method(layout, method, tasks) for method in find_methods(layout)]
    return [r for r in results if r.accuracy.size]
