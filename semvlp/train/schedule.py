"""The mode schedule: which stream mode ("single" or "two") each optimizer step trains.

Steps are grouped into blocks (one step, N steps, or one epoch); blocks cycle through `single` blocks of
single-stream then `two` blocks of two-stream. A schedule of one mode serves ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("alternate", "single", "two")


@dataclass(frozen=True)
class ModeSchedule:
    kind: str = "alternate"
    single: int = 1          # blocks of single-stream per cycle
    two: int = 1             # blocks of two-stream per cycle
    block_steps: int = 1     # steps per block

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.single < 0 or self.two < 0 or self.single + self.two == 0:
            raise ValueError(f"ratio: expected non-negative block counts, not both 0, got {self.single}:{self.two}")
        if self.block_steps < 1:
            raise ValueError(f"block_steps: expected a positive int, got {self.block_steps}")

    @classmethod
    def parse(cls, kind: str, ratio: str = "1:1", granularity: str = "step",
              steps_per_epoch: int | None = None) -> "ModeSchedule":
        """ratio "S:T"; granularity "step", "epoch" or a number of steps."""
        try:
            single, two = (int(v) for v in ratio.split(":"))
        except ValueError:
            raise ValueError(f"ratio: expected 'S:T' with two integers (e.g. 1:1, 3:1), got {ratio!r}") from None
        if granularity == "step":
            block = 1
        elif granularity == "epoch":
            if not steps_per_epoch:
                raise ValueError("granularity: 'epoch' needs the number of steps per epoch")
            block = steps_per_epoch
        elif granularity.isdigit() and int(granularity) > 0:
            block = int(granularity)
        else:
            raise ValueError(f"granularity: expected 'step', 'epoch' or a positive number of steps, "
                             f"got {granularity!r}")
        return cls(kind, single, two, block)

    def mode(self, step: int) -> str:
        if self.kind != "alternate":
            return self.kind
        position = (step // self.block_steps) % (self.single + self.two)
        return "single" if position < self.single else "two"
