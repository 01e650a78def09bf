"""The command line's shared pieces: a parser that reports a mistake in one line, and checked number types."""
import argparse
import math
from collections.abc import Callable


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
