"""The command line's shared pieces: a parser that reports a mistake in one line, checked number types, and the
one way a method's own hyper-parameters become options."""
import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class OneLineParser(argparse.ArgumentParser):
    """Report a bad option as one line (not the usage block), like every other user mistake."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see --help)\n")


def number(kind: type, allow_zero: bool = False) -> Callable[[str], int | float]:
    """An argparse type for a positive (or, with allow_zero, non-negative) int or float."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'zero or more' if allow_zero else 'positive'}, got {text}")
        return value
    return parse


@dataclass(frozen=True)
class Option:
    """A method's hyper-parameter; main.py offers it as ``--name-with-dashes``."""

    default: int | float
    help: str  # may use %(default)s
    positive: bool = False  # zero is refused too (e.g. a temperature one divides by)


def add_options(parser: argparse.ArgumentParser, title: str, tables: Iterable[dict[str, Option]]) -> None:
    """One options group holding the methods' hyper-parameters (each used only by its own method)."""
    group = parser.add_argument_group(title)
    for table in tables:
        for name, option in table.items():
            group.add_argument("--" + name.replace("_", "-"), default=option.default, help=option.help,
                               type=number(type(option.default), allow_zero=not option.positive))
