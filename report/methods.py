"""Which methods a result folder holds, in the paper's column order, and the names the paper gives them."""
import csv
from pathlib import Path

import continual
from network import METHODS
from training.results import CSV_HEADER
from training.settings import Layout

PAPER_NAMES = {"Ghost_reduced_v1": "CLR", "Ghost": "CLR-Full"}


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
