"""What --tune chose and why, from each method's tuning table (training.tuning writes it): in a seed's report every
configuration tried with its held-out scores, in the report across seeds the choice of each seed."""
import pandas as pd

from network import method_spec
from report.methods import method_label
from report.tables import markdown
from training.settings import Layout

PROTOCOL = ("`--tune` chose each method's learning rate and own option on the run's first tasks, before the run learnt "
            "them: each configuration learnt those tasks on their training images less a held-out tenth of each class, "
            "and scored the mean accuracy on that tenth after the last of them (A-GEM's protocol, one coordinate at a "
            "time; the project's docs/baselines.md has it). No validation image was read while tuning: the "
            "validation accuracies of this report played no part in the choice.")


def read_tuning(layout: Layout, method: str) -> pd.DataFrame | None:
    """The method's tuning table in a seed's result folder, or None if the run was not tuned."""
    path = layout.tuning_table(method)
    return pd.read_csv(path) if path.exists() else None


def searched(method: str) -> list[str]:
    return list(method_spec(method).search)


def choice_words(method: str, table: pd.DataFrame) -> str:
    chosen = table[table["chosen"] == 1].iloc[0]
    return ", ".join(f"{name} {chosen[name]:g}" for name in searched(method))


def table_markdown(method: str, table: pd.DataFrame) -> str:
    """Every configuration tried, in the order tried: its values, held-out accuracy per tuning task and their mean
    (%), its time, and the one chosen."""
    names = searched(method)
    tasks = [column for column in table.columns if column not in (*names, "score", "seconds", "chosen")]
    cells = pd.DataFrame({**{name: table[name].map("{:g}".format) for name in names},
                          **{task: table[task].map(lambda value: f"{100 * value:.2f}") for task in tasks},
                          "score %": table["score"].map(lambda value: f"{100 * value:.2f}"),
                          "seconds": table["seconds"].map(lambda value: f"{value:.0f}"),
                          "chosen": table["chosen"].map({1: "**chosen**", 0: ""})})
    return markdown(cells)


def seed_section(layout: Layout, methods: list[str]) -> str | None:
    """The seed report's section on tuning (None if no method was tuned)."""
    tables = {method: table for method in methods if (table := read_tuning(layout, method)) is not None}
    if not tables:
        return None
    parts = [f"**{method_label(method)}** chose {choice_words(method, table)} of {len(table)} configurations:\n\n"
             + table_markdown(method, table) for method, table in tables.items()]
    return "\n\n".join(["## Tuning", PROTOCOL, *parts])


def seeds_section(seed_layouts: dict[int, Layout], methods: list[str]) -> str | None:
    """The report across seeds: what each seed's tuning chose, per method (None if no method was tuned)."""
    rows = []
    for method in methods:
        choices = {seed: read_tuning(layout, method) for seed, layout in seed_layouts.items()}
        if any(table is not None for table in choices.values()):
            rows.append({"method": method_label(method),
                         **{f"seed {seed}": "" if table is None else choice_words(method, table)
                            for seed, table in choices.items()}})
    if not rows:
        return None
    return "\n\n".join(["## Tuning", PROTOCOL + " Each seed tuned on its own; its report has every configuration.",
                        markdown(pd.DataFrame(rows))])
