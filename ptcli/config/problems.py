"""Config problems collected and reported together, and the did-you-mean suggestion they use."""

from __future__ import annotations

import difflib

from ptcli.errors import PtcliError


class ConfigError(PtcliError):
    """One or more config problems, reported together on one screen (exit code 2)."""

    def __init__(self, problems: list[str], fix: str | None = None):
        self.problems = problems
        what = problems[0] if len(problems) == 1 else f"{len(problems)} problems in the config"
        super().__init__(what, fix=fix)

    def __str__(self) -> str:
        return self.message()

    def message(self) -> str:
        if len(self.problems) == 1:
            return super().message()
        lines = [f"ptcli: error: {len(self.problems)} problems in the config:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.fix:
            lines.append(self.fix)
        return "\n".join(lines)


def suggest(word: str, choices, prefix: str = "") -> str:
    """`` (did you mean 'prefix.x'?)`` for the choice closest to ``word``, or an empty string."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
