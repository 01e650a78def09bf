"""Which methods a result folder holds, in the paper's column order, and the names the paper gives them."""
import csv
from pathlib import Path

import continual
from network import METHODS

PAPER_NAMES = {"Ghost_reduced_v1": "CLR", "Ghost": "CLR-Full"}
RESULT_HEADER = ["task_id", "task_name", "best_acc"]
NOT_METHOD_CSVS = ("results_wide.csv",)  # the report's own output
NOT_METHOD_PREFIXES = ("task_agnostic_",)  # other per-method files beside <method>.csv
NOT_METHOD_SUFFIXES = ("_matrix.csv",)


def display_name(method: str) -> str:
    """The paper's name where it has one (CLR, CLR-Full), else the method's own."""
    return PAPER_NAMES.get(method, method)


def method_label(method: str) -> str:
    return f"{PAPER_NAMES[method]} ({method})" if method in PAPER_NAMES else method


def paper_order(methods: list[str]) -> list[str]:
    """CLR, CLR-Full, then the isolated methods in the registry's order, the shared-backbone ones, then any others
    by name."""
    known = [*PAPER_NAMES, *METHODS, *continual.METHODS]
    return sorted(methods, key=lambda m: (known.index(m), "") if m in known else (len(known), m))


def is_result_csv(path: Path) -> bool:
    """A <method>.csv: named like one and starting with the results header."""
    name = path.name
    if name in NOT_METHOD_CSVS or name.startswith(NOT_METHOD_PREFIXES) or name.endswith(NOT_METHOD_SUFFIXES):
        return False
    with path.open(newline="") as file:
        return next(csv.reader(file), None) == RESULT_HEADER


def find_methods(result: Path) -> list[str]:
    """Every method with a results CSV in the folder, in the paper's order; no closed list of names."""
    if not result.is_dir():
        return []
    return paper_order([path.stem for path in result.glob("*.csv") if is_result_csv(path)])
