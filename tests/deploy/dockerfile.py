"""Just enough of a Dockerfile reader to test deploy/Dockerfile without a container engine."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


@dataclass
class Dockerfile:
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Dockerfile:
        parsed = cls()
        stage = -1
        logical = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not logical and (not line or line.startswith("#")):
                continue
            if line.startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            keyword, _, args = logical.partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                stage += 1
            parsed.instructions.append(Instruction(keyword, args.strip(), stage))
            logical = ""
        return parsed

    @property
    def final_stage(self) -> int:
        return max(i.stage for i in self.instructions)

    def final(self, keyword: str) -> list[Instruction]:
        """The ``keyword`` instructions of the image's own (last) stage."""
        return [i for i in self.instructions if i.keyword == keyword and i.stage == self.final_stage]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        """ARG defaults, every stage."""
        values: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, _, default = instruction.args.partition("=")
            values[name] = default
        return values

    def env(self) -> dict[str, str]:
        """The image's ENV (``KEY=VALUE`` pairs, as in the final stage)."""
        values: dict[str, str] = {}
        for instruction in self.final("ENV"):
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        (instruction,) = self.final(keyword)
        value = json.loads(instruction.args)
        assert isinstance(value, list), f"{keyword} is not in exec form"
        return [str(v) for v in value]

    def healthcheck(self) -> tuple[dict[str, str], str]:
        """HEALTHCHECK's options and its shell-form command."""
        (instruction,) = self.final("HEALTHCHECK")
        options_text, _, command = instruction.args.partition("CMD ")
        options = dict(opt.removeprefix("--").split("=", 1) for opt in options_text.split())
        return options, command.strip()
