"""The README and docs/ cannot drift from the code: every documented command parses, every relative link resolves.

Commands are read from fenced code blocks and inline code. A line that runs `main.py` (with python or torchrun)
must parse with main.get_args_parser(), so renaming or removing an option fails here until the docs follow.
A line that runs another script must name one that exists, and parse with its get_args_parser() if it has one.
Every --option the pages name anywhere must be an option of main.py, of a benchmark script or of torchrun.
Links are the relative targets of [text](path) and ![alt](path); an anchor (#...) must name a heading of the
page it points to. Every method named in a docs table's method column exists, every default in options.md's
first table is the parser's, and every CSV is written through common.files.

Every Python snippet of the README and docs/api.md runs as shown, quickly and without the network, and every one of
docs/adding-a-method.md is an excerpt of the method file it walks through. Every benchmark
script is named somewhere, the glossary's method families are the registry's, and the README stays one screen to
start: at most README_LINES lines, with the demo, the tests and where the data comes from in its first screen.
"""
import contextlib
import csv
import importlib
import io
import re
import runpy
import shlex
import socket
import textwrap
from pathlib import Path

import pytest

import main
import network
from dataset.preprocess import default_workers
from network import Family
from network.backbone import DEFAULT_ARCH, DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Placeholders the docs write in capitals, where the parser needs a value of a given kind (a path is any string).
PLACEHOLDERS = {"M": "SGD", "$method": "SGD"}
SHELL_OPERATOR = set("();<>|&")
FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"!?\[(?:[^\]]|\n)*?\]\(([^)\s]+)\)")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def fenced_and_prose(text: str) -> tuple[list[str], str]:
    """The fenced code blocks, and the rest of the page with them blanked out."""
    return FENCE.findall(text), FENCE.sub("", text)


def block_lines(block: str) -> list[str]:
    """A code block's logical lines: continuations (a trailing backslash) joined."""
    lines, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            lines.append(pending + line)
            pending = ""
    if pending:
        lines.append(pending)
    return lines


def command_lines(page: Path) -> list[str]:
    """Every line of the page, in code blocks or inline code, that may run something."""
    blocks, prose = fenced_and_prose(page.read_text(encoding="utf-8"))
    lines = [line for block in blocks for line in block_lines(block)]
    lines += [" ".join(span.split()) for span in INLINE.findall(prose)]  # inline code may wrap across lines
    return [line.strip() for line in lines if line.strip()]


def split_command(line: str) -> list[str] | None:
    """The words of a shell line, comments stripped and operators (&&, |, >) as words of their own; None if it
    does not split (an unmatched quote: then it is prose, not a command)."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:
        return None


def script_invocations(line: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) for each python/torchrun call of a repository script in the line."""
    words = split_command(line)
    if not words:
        return []
    calls = []
    for i, word in enumerate(words):
        if not word.endswith(".py") or i == 0:
            continue
        launcher = words[:i]
        if not any(w in ("python", "python3", "torchrun") or w.endswith("/python") for w in launcher):
            continue
        args = []
        for arg in words[i + 1:]:
            if arg and set(arg) <= SHELL_OPERATOR:  # &&, |, >, ... end the command
                break
            args.append(PLACEHOLDERS.get(arg, arg))
        calls.append((word, args))
    return calls


def documented_calls() -> list[tuple[str, str, str, list[str]]]:
    """(page, line, script, arguments) for every documented call of a repository script."""
    calls = []
    for page in PAGES:
        for line in command_lines(page):
            for script, args in script_invocations(line):
                calls.append((relative(page), line, script, args))
    return calls


CALLS = documented_calls()
MAIN_CALLS = [call for call in CALLS if call[2] == "main.py"]
OTHER_CALLS = [call for call in CALLS if call[2] != "main.py"]


def parse(parser, args: list[str]) -> tuple[int | None, str]:
    """Parse, capturing argparse's output; the exit code (None when it parsed) and what it printed.

    Abbreviations are refused, so that a documented option renamed to a longer name cannot pass as a prefix."""
    parser.allow_abbrev = False
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            parser.parse_args(args)
        except SystemExit as stop:
            return stop.code, out.getvalue()
    return None, out.getvalue()


def test_the_docs_show_main_py_commands():
    pages = {page for page, *_ in MAIN_CALLS}
    assert "README.md" in pages and len(MAIN_CALLS) >= 20, "the command reader found too few commands"
    assert any(line.startswith("torchrun") for _, line, _, _ in MAIN_CALLS)


@pytest.mark.parametrize("page, line, script, args", MAIN_CALLS, ids=[f"{c[0]}: {c[1]}" for c in MAIN_CALLS])
def test_documented_main_command_parses(page, line, script, args):
    code, output = parse(main.get_args_parser(), args)
    ok = code is None or (code == 0 and "--help" in args)
    assert ok, f"{page}: `{line}` does not parse with main.get_args_parser() (exit {code}): {output.strip()}"


@pytest.mark.parametrize("page, line, script, args", OTHER_CALLS, ids=[f"{c[0]}: {c[1]}" for c in OTHER_CALLS])
def test_documented_script_exists_and_parses(page, line, script, args):
    path = ROOT / script
    assert path.is_file(), f"{page}: `{line}` runs {script}, which does not exist"
    module = importlib.import_module(".".join(Path(script).with_suffix("").parts))
    if not hasattr(module, "get_args_parser"):
        return  # a script that builds its parser inside main() can only be checked for existence
    code, output = parse(module.get_args_parser(), args)
    assert code is None, f"{page}: `{line}` does not parse with {script}'s parser (exit {code}): {output.strip()}"


# torchrun's own options, which the docs show in front of main.py, and pip's, which the README's set-up uses
TORCHRUN_OPTIONS = {"--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id", "--standalone"}
PIP_OPTIONS = {"--index-url"}
PYTEST_OPTIONS = {"--durations"}


def known_options() -> set[str]:
    """The options of main.py and of every benchmark script with a get_args_parser(), torchrun's, pip's and pytest's."""
    parsers = [main.get_args_parser()]
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        module = importlib.import_module(f"benchmarks.{script.stem}")
        if hasattr(module, "get_args_parser"):
            parsers.append(module.get_args_parser())
    return TORCHRUN_OPTIONS | PIP_OPTIONS | PYTEST_OPTIONS | {option for parser in parsers for action in parser._actions
                               for option in action.option_strings}


def test_every_documented_option_exists():
    """An option named anywhere in the docs (tables and prose too, not only commands) is one the code has."""
    known = known_options()
    unknown = {}
    for page in PAGES:
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", page.read_text(encoding="utf-8")):
            if option not in known:
                unknown.setdefault(option, set()).add(relative(page))
    assert not unknown, f"options named in the docs that no parser has: {unknown}"


def test_options_page_lists_exactly_main_options():
    """docs/options.md names every option of main.py, and no other."""
    parser_options = {option for action in main.get_args_parser()._actions for option in action.option_strings
                      if option.startswith("--")}
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    page_options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert not parser_options - page_options, f"options of main.py missing from docs/options.md: " \
                                              f"{sorted(parser_options - page_options)}"
    assert not page_options - parser_options, f"docs/options.md names options main.py does not have: " \
                                              f"{sorted(page_options - parser_options)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    _, prose = fenced_and_prose(page.read_text(encoding="utf-8"))
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", prose, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def documented_links() -> list[tuple[str, str]]:
    links = []
    for page in PAGES:
        _, prose = fenced_and_prose(page.read_text(encoding="utf-8"))
        prose = INLINE.sub("", prose)
        for target in LINK.findall(prose):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked
                links.append((relative(page), target))
    return links


LINKS = documented_links()


def test_the_docs_have_links():
    assert len(LINKS) >= 30, "the link reader found too few links"


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p} -> {t}" for p, t in LINKS])
def test_relative_link_resolves(page, target):
    path_part, _, anchor = target.partition("#")
    source = ROOT / page
    destination = (source.parent / path_part).resolve() if path_part else source
    assert destination.exists(), f"{page}: link ({target}) points to {path_part}, which does not exist"
    if anchor and destination.suffix == ".md":
        assert anchor in anchors(destination), \
            f"{page}: link ({target}): {relative(destination)} has no heading with the anchor #{anchor}"


def test_release_task_table_matches_stat_csv():
    """docs/release.md §5 lists the 53 tasks as stat.csv does."""
    text = (ROOT / "docs" / "release.md").read_text(encoding="utf-8")
    section = text.split("## 5. ", 1)[1].split("\n## ", 1)[0]
    table = [[cell.strip() for cell in row.strip("|").split("|")]
             for row in section.splitlines() if re.match(r"\| *\d+ *\|", row)]
    with open(ROOT / "stat.csv", newline="") as handle:
        stat = [[str(int(r["oldid"]) + 1), r["newid"], r["name"], r["class_num"], r["train_num"], r["test_num"]]
                for r in csv.DictReader(handle)]
    assert table == stat


def table_rows(page: Path) -> list[list[list[str]]]:
    """Every markdown table of the page outside code blocks, as rows of cells (the header first, no rule row)."""
    _, prose = fenced_and_prose(page.read_text(encoding="utf-8"))
    tables, current = [], []
    for line in prose.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if not all(set(cell) <= set("-: ") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


METHOD_HEADERS = {"method", "`--method`"}


def test_every_method_in_a_docs_table_exists():
    """A backticked name in a table's method column (headed `method` or `--method`) is a registered method or a
    named set of methods."""
    known = set(network.REGISTRY) | set(getattr(network, "METHOD_SETS", {}))
    unknown, seen = {}, 0
    for page in PAGES:
        for table in table_rows(page):
            columns = [i for i, header in enumerate(table[0]) if header in METHOD_HEADERS]
            for row in table[1:]:
                for name in (found for i in columns if i < len(row) for found in re.findall(r"`([^`]+)`", row[i])):
                    seen += 1
                    if name not in known:
                        unknown.setdefault(name, set()).add(relative(page))
    assert seen >= 40, "the table reader found too few method names"
    assert not unknown, f"methods named in docs tables that the registry does not have: {unknown}"


# options.md's defaults that are words, or what the code fills in where the parser's default is None: the exact
# cell, and the value it stands for (None: a description the code's behaviour gives, checked by other tests)
DESCRIBED_DEFAULTS = {
    "--data": ("the demo", None),
    "--stat": (f"the repository's `stat.csv`; your own tasks: their sorted folders; the demo: `{main.DEMO_DATA}/stat.csv`",
               None),
    "--tasks": ("all", None),
    "--method": (f"`{network.DEFAULT_METHOD}`", None),
    "--arch": (f"`{DEFAULT_ARCH}`", None),
    "--weights": (f"`{DEFAULT_WEIGHTS}`", None),
    "--shared-bn": (f"`{network.methods.DRIFT}`", None),  # None: drift, or what PSP and PackNet fix
    "--norm": ("the method's own: `train`", None),  # None: each method's own policy (Linear's is frozen)
    "--clr-placement": ("the method's own: `every`", None),
    "--eval-batch-size": ("16 on CPU, 256 on CUDA", None),
    "--image-size": (str(main.DEFAULT_IMAGE_SIZE), None),
    "--seed": ("0", None),
    "--workers": ("min(8, cores)", default_workers()),
    "--result": (f"`./result/`; the demo: `./{main.DEMO_DEFAULTS['result']}/`", Path("result")),
    "--weight": (f"`./weight/`; the demo: `./{main.DEMO_DEFAULTS['weight']}/`", Path("weight")),
    "--cache-dir": ("`./cache/`", Path("cache")),
    "--compile": ("off", False),
}


def documented_default(cell: str):
    """A default cell as a value: a number, or the text between backticks (a path as ./NAME/)."""
    text = cell.strip("`")
    try:
        return float(text)
    except ValueError:
        return text


def test_every_default_in_the_options_table_is_the_parsers():
    parser = main.get_args_parser()
    defaults = {action.option_strings[0]: action.default for action in parser._actions if action.option_strings}
    table = table_rows(ROOT / "docs" / "options.md")[0]
    checked = 0
    for option_cell, default_cell, *_ in table[1:]:
        option = re.match(r"`(--[a-z-]+)", option_cell).group(1)
        if option in DESCRIBED_DEFAULTS:
            cell, value = DESCRIBED_DEFAULTS[option]
            assert default_cell == cell, f"options.md: {option}'s default is {default_cell!r}, expected {cell!r}"
            assert defaults[option] == value, f"{option}'s parser default {defaults[option]!r} is not {value!r}"
        elif default_cell:
            assert documented_default(default_cell) == defaults[option], \
                f"options.md: {option}'s default is {default_cell}, the parser's {defaults[option]!r}"
        else:
            assert defaults[option] in (None, False), f"options.md gives {option} no default; the parser's is " \
                                                      f"{defaults[option]!r}"
        checked += 1
    assert checked >= 25, "the options table reader found too few rows"


def test_every_csv_goes_through_the_one_writer():
    """layout.md promises one CSV writer (common.files): no other module writes CSV with the csv module itself."""
    writers = [relative(path) for folder in ("common", "continual", "dataset", "inference", "network", "report",
                                             "training", "benchmarks")
               for path in sorted((ROOT / folder).glob("*.py"))
               if re.search(r"csv\.(writer|DictWriter)\(", path.read_text(encoding="utf-8"))]
    assert writers == ["common/files.py"]


# ---- the README as the front door, the snippets, the benchmarks and the glossary ----

README = ROOT / "README.md"
README_LINES, FIRST_SCREEN = 130, 40
SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt"
FRONT_DOOR = {  # what the README's first screen must hold, verbatim
    "the demo command": f"{SETUP} && python main.py",
    "the test commands": f'{SETUP}\npython -m pytest -q -m "not slow"\npython -m pytest -q\n',
    "the link to where the real data comes from": "(docs/data.md#downloading-the-dct-data)",
}


def test_the_readme_is_short_and_its_first_screen_says_how_to_start():
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; move detail to a docs page"
    first_screen = "".join(lines[:FIRST_SCREEN])
    missing = [what for what, text in FRONT_DOOR.items() if text not in first_screen]
    assert not missing, f"README.md's first {FIRST_SCREEN} lines lack {missing}"


PYTHON_FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
SNIPPET_PAGES = [README, ROOT / "docs" / "api.md"]


def python_snippets() -> list[tuple[str, int, str]]:
    """(page, number, code) for every fenced Python block of the pages that show the API."""
    return [(relative(page), number, textwrap.dedent(code))
            for page in SNIPPET_PAGES
            for number, (_, code) in enumerate(PYTHON_FENCE.findall(page.read_text(encoding="utf-8")), 1)]


SNIPPETS = python_snippets()


def test_the_api_pages_show_python_snippets():
    assert {page for page, _, _ in SNIPPETS} == {relative(page) for page in SNIPPET_PAGES}


def refuse_network(*_args, **_kwargs):
    raise OSError("a documented snippet must not use the network")


@pytest.mark.parametrize("page, number, code", SNIPPETS, ids=[f"{page} snippet {n}" for page, n, _ in SNIPPETS])
def test_python_snippet_runs(page, number, code, tmp_path, monkeypatch):
    """The snippet runs as shown, from a fresh folder (what it writes lands there), with no network: one that
    downloads weights or data fails here, so the docs show the self-contained form."""
    script = tmp_path / f"{Path(page).stem}_snippet_{number}.py"
    script.write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(socket.socket, "connect", refuse_network)
    runpy.run_path(str(script), run_name="__snippet__")


def test_the_worked_example_of_adding_a_method_quotes_the_real_file():
    """Every Python block of docs/adding-a-method.md is an excerpt of the file it walks through, as it is now."""
    source = (ROOT / "network" / "isolated" / "eft.py").read_text(encoding="utf-8")
    blocks = [code for _, code in PYTHON_FENCE.findall((ROOT / "docs" / "adding-a-method.md").read_text("utf-8"))]
    assert len(blocks) >= 5
    stale = [code for code in blocks if code not in source]
    assert not stale, f"docs/adding-a-method.md quotes lines that network/isolated/eft.py does not have: {stale}"


def test_every_benchmark_is_named_in_the_docs():
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    scripts = [relative(path) for path in sorted((ROOT / "benchmarks").glob("*.py")) if path.stem != "__init__"]
    assert scripts, "no benchmark scripts found"
    unnamed = [script for script in scripts if script not in text]
    assert not unnamed, f"benchmark scripts that neither the README nor docs/ name: {unnamed}"


@pytest.mark.parametrize("term, family", [("Isolated method", Family.ISOLATED),
                                          ("Shared-backbone method", Family.SHARED)])
def test_the_glossary_lists_each_family_of_methods(term, family):
    text = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    entry = re.search(rf"^- \*\*{term}\*\*:(.*?)(?=^- |\Z)", text, re.MULTILINE | re.DOTALL).group(1)
    listed = set(re.findall(r"`([^`]+)`", entry))
    assert listed == {name for name, spec in network.REGISTRY.items() if spec.family is family}

