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
    """A method's hyper-parameter. It is named ``<method>_<name>`` wherever it appears (a task's config, the
    method's code) and offered as ``--<method>-<name>``; its range is checked here and nowhere else."""

    default: int | float
    help: str  # may use %(default)s
    low: float = 0  # the range's ends; ``bounds`` says which ends belong to it
    high: float = math.inf
    bounds: str = "[]"  # "[]", "[)", "(]" or "()": closed or open at each end

    def problem(self, value: int | float) -> str | None:
        """What the range asks of a ``value`` outside it, in the words of an error line ("must be positive"), or
        None for a value inside it."""
        closed_low, closed_high = self.bounds[0] == "[", self.bounds[1] == "]"
        inside = ((value >= self.low if closed_low else value > self.low)
                  and (value <= self.high if closed_high else value < self.high) and math.isfinite(value))
        if inside:
            return None
        if self.low == 0 and self.high == math.inf:
            return f"must be {'zero or more' if closed_low else 'positive'}"
        return f"must be in {self.bounds[0]}{self.low:g}, {self.high:g}{self.bounds[1]}"

    def parse(self, text: str) -> int | float:
        """The argparse type of the option: a number of the default's type, in range."""
        kind = type(self.default)
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value


def option_flag(name: str) -> str:
    """The command-line spelling of a method option's name: ``si_c`` is ``--si-c``."""
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, title: str, tables: Iterable[dict[str, Option]]) -> None:
    """One options group holding the methods' hyper-parameters. None is the default, so that a run can tell an
    option given (refused unless it is the chosen method's) from one left out (the method's default)."""
    group = parser.add_argument_group(title)
    for table in tables:
        for name, option in table.items():
            group.add_argument(option_flag(name), default=None, type=option.parse,
                               help=option.help.replace("%(default)s", str(option.default)))
