"""Which test tier catches which planted defect: the evidence that a faster suite still guards what matters.

    python benchmarks/defects.py                          # every defect against the quick tier, then the whole suite
    python benchmarks/defects.py --tiers quick            # the quick tier alone
    python benchmarks/defects.py --defects resume nan     # some defects
    python benchmarks/defects.py --repo /path/to/checkout # another checkout's code and tests

Each defect is one small edit of the code, of the kind a real change could make by mistake (a sampling quota off by
one, a CLR kernel left out, a resume that restores its random state late, a verification that tolerates a
difference, two processes claiming the same unit of work, a NaN check that looks half as often). For each defect
and tier the script copies the checkout's tracked and untracked-unignored files to a temporary folder, makes the
edit there (it must match exactly once, so a refactor that moves the code fails loudly instead of testing
nothing), and runs that tier with ``-x``: a defect is caught when a test fails, and the first failing test is
named. The tier first runs once without a defect, so "caught" never means "already broken". The whole suite
contains the quick tier, so a defect the quick tier caught is caught by the whole suite too and is not run again
there (and the whole suite runs at all only for the defects the quick tier missed). The working tree is never
touched.

It prints a markdown table (tier x defect: the catching test, or "missed"), with each run's wall time.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIERS = {"quick": ["-m", "not slow"], "whole": []}  # the README's two test commands
CONTAINS = {"whole": "quick"}  # every test of the quick tier is in the whole suite


@dataclass(frozen=True)
class Defect:
    name: str
    what: str
    path: str  # relative to the checkout
    old: str
    new: str


DEFECTS = (
    Defect("sampling", "DCT sampling takes quota + 1 images per class", "dataset/dct.py",
           "shuffled[:quota]", "shuffled[:quota + 1]"),
    Defect("placement", "CLR skips the kernel after the stem conv", "network/isolated/clr.py",
           "        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial\n",
           "        if conv.in_channels == 3:\n            return None\n"
           "        kernel_size = after_pointwise if conv.kernel_size == (1, 1) else after_spatial\n"),
    Defect("resume", "a resume restores the shuffling RNG one epoch late", "training/checkpoints.py",
           '    batches.generator.set_state(checkpoint["shuffle_rng"])\n',
           '    batches.generator.set_state(checkpoint["shuffle_rng"])\n'
           "    torch.randperm(batches.images.shape[0], generator=batches.generator)\n"),
    Defect("verification", "the report's verification tolerates 0.01 of accuracy", "report/verify.py",
           "        if correct == record.best_correct:\n",
           "        if abs(correct - record.best_correct) <= 0.01 * record.val_images:\n"),
    Defect("claiming", "two torchrun processes claim the same unit", "training/distributed.py",
           "while (drawn := store.add(COUNTER, 1)) <= len(order):",
           "while (drawn := (store.add(COUNTER, 1) + 1) // 2) <= len(order):"),
    Defect("nan", "the NaN stop checks the loss only every other time", "training/loop.py",
           "        if step % CHECK_EVERY == CHECK_EVERY - 1:\n",
           "        if step % (2 * CHECK_EVERY) == 2 * CHECK_EVERY - 1:\n"),
)


@dataclass
class Outcome:
    caught: bool
    first_failure: str  # the first failing test's id, or what went wrong
    seconds: float
    seen_in: str = ""  # the contained tier whose run caught it, where this tier was not run for it


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="+", choices=list(TIERS), default=list(TIERS), metavar="TIER",
                        help=f"the tiers to run, in this order (default: {' '.join(TIERS)})")
    parser.add_argument("--defects", nargs="+", choices=[d.name for d in DEFECTS], metavar="NAME",
                        help=f"the defects to plant (default: all: {' '.join(d.name for d in DEFECTS)})")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose code and tests are copied "
                        "(default: this one); an older checkout whose tests have no tiers runs 'whole' alone")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per test run (default 1800)")
    return parser


def copy_checkout(repo: Path, target: Path) -> None:
    """The files git would commit (tracked, and untracked but not ignored): no venv, caches or results."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = repo / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def plant(checkout: Path, defect: Defect) -> None:
    path = checkout / defect.path
    text = path.read_text()
    if text.count(defect.old) != 1:
        raise SystemExit(f"error: defect {defect.name}: the code it edits occurs {text.count(defect.old)} times in "
                         f"{defect.path}, not once; update DEFECTS in {Path(__file__).name}")
    path.write_text(text.replace(defect.old, defect.new))


def run_tier(repo: Path, tier: str, defect: Defect | None, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="clr-defect-") as tmp:
        checkout = Path(tmp)
        copy_checkout(repo, checkout)
        if defect is not None:
            plant(checkout, defect)
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TIERS[tier]]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Outcome(False, f"no answer in {timeout:.0f} s", time.perf_counter() - started)
        seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.MULTILINE)
    if done.returncode in (0, 5):  # 5: nothing collected
        return Outcome(False, "missed", seconds)
    return Outcome(True, failed[0] if failed else f"exit status {done.returncode}: {output.strip()[-300:]}", seconds)


def cell(outcome: Outcome) -> str:
    if outcome.seen_in:
        return f"caught (by the {outcome.seen_in} tier's test)"
    if outcome.caught:
        return f"`{outcome.first_failure}` ({outcome.seconds:.0f} s)"
    return f"**{outcome.first_failure}**"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    defects = [d for d in DEFECTS if not args.defects or d.name in args.defects]
    table: dict[str, dict[str, Outcome]] = {}
    for tier in args.tiers:
        inner = table.get(CONTAINS.get(tier), {})
        table[tier] = {name: Outcome(True, outcome.first_failure, outcome.seconds, seen_in=CONTAINS[tier])
                       for name, outcome in inner.items() if outcome.caught}
        if tier in CONTAINS and all(d.name in table[tier] for d in defects):
            print(f"{tier}: every defect was caught by the {CONTAINS[tier]} tier it contains", flush=True)
            continue
        control = run_tier(args.repo, tier, None, args.timeout)
        print(f"{tier}: without a defect: {'FAILED ' + control.first_failure if control.caught else 'passed'} "
              f"in {control.seconds:.0f} s", flush=True)
        if control.caught:
            print(f"error: the {tier} tier fails without a defect, so it cannot tell one", file=sys.stderr)
            return 2
        for defect in (d for d in defects if d.name not in table[tier]):
            outcome = run_tier(args.repo, tier, defect, args.timeout)
            table[tier][defect.name] = outcome
            print(f"{tier}: {defect.name}: {outcome.first_failure} ({outcome.seconds:.0f} s)", flush=True)
    print("\n| defect | " + " | ".join(args.tiers) + " |\n|---|" + "---|" * len(args.tiers))
    for defect in defects:
        cells = [cell(table[t][defect.name]) for t in args.tiers]
        print(f"| {defect.what} | " + " | ".join(cells) + " |")
    missed = [(t, d.name) for t in args.tiers for d in defects if not table[t][d.name].caught]
    return 1 if any(tier == "whole" for tier, _ in missed) else 0


if __name__ == "__main__":
    sys.exit(main())
