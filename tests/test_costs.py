"""The cost table of docs/methods.md is the code's own count: its ResNet rows equal what benchmarks/costs.py
computes now, and those equal the reference release's sizes."""
import re
from pathlib import Path

from benchmarks import costs

ROOT = Path(__file__).resolve().parent.parent


def test_the_resnet_rows_are_the_reference_sizes_and_the_docs_table():
    rows = [costs.cost_row(arch, costs.CLASSES) for arch in ("resnet18", "resnet50")]
    # CLR kernels + BN affine (docs/release.md §1): 35,136 + 9,600 and 34,560 + 53,120; CLR-Full 43,200 + 9,600
    assert rows[0]["Ghost_reduced_v1"]["without_head"] == 44_736 and rows[0]["Ghost"]["without_head"] == 52_800
    assert rows[1]["Ghost_reduced_v1"]["without_head"] == 87_680
    assert rows[1]["Ghost_reduced_v1"]["with_head"] == 87_680 + 2049 * 30
    page = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    generated = costs.table(rows, costs.CLASSES).splitlines()
    documented = re.search(re.escape(costs.START) + r"\n(.*?)\n" + re.escape(costs.END), page, re.S).group(1)
    assert generated[:2] == documented.splitlines()[:2]  # the header
    assert all(line in documented.splitlines() for line in generated[2:])  # the ResNet rows, as measured now


def test_write_replaces_only_the_generated_table(tmp_path):
    doc = tmp_path / "methods.md"
    doc.write_text(f"before\n{costs.START}\nold\n{costs.END}\nafter\n")
    costs.write_into_doc("| new |", doc)
    assert doc.read_text() == f"before\n{costs.START}\n| new |\n{costs.END}\nafter\n"
