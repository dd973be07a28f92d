"""Option values shared by several commands: comma-separated lists of fixed words, completed
item by item (`--check db,fr<TAB>` -> `db,freshness`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def complete_each(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """Shell completion for a comma-separated option: the words already typed stay, the last
    one is completed from ``choices``, and a word is not offered twice."""

    def complete(incomplete: str) -> list[str]:
        done, _, last = incomplete.rpartition(",")
        typed = {word.strip() for word in done.split(",") if word.strip()}
        prefix = f"{done}," if done else ""
        return [
            prefix + choice for choice in choices if choice.startswith(last) and choice not in typed
        ]

    return complete


def metavar(word: str) -> str:
    """How help shows a comma-separated option, e.g. `<check,...>` (its help lists the words)."""
    return f"<{word},...>"
