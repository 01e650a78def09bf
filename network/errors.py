"""The wording the network package's error messages share."""
from collections.abc import Sequence

_SHOWN_KEYS = 3


def describe_key_difference(missing: Sequence[str], unexpected: Sequence[str]) -> str:
    """'2 keys missing (first: a, b), 0 unexpected': enough to tell what went wrong, on one line."""
    noun = "key" if len(missing) == 1 else "keys"
    return f"{len(missing)} {noun} missing{_first(missing)}, {len(unexpected)} unexpected{_first(unexpected)}"


def _first(keys: Sequence[str]) -> str:
    if not keys:
        return ""
    more = ", ..." if len(keys) > _SHOWN_KEYS else ""
    return f" (first: {', '.join(keys[:_SHOWN_KEYS])}{more})"
