"""The mode schedule: which stream mode ("single" or "two") each optimizer step trains.

alternate: steps are grouped into blocks (one step, N steps, or one epoch); blocks cycle through `single` blocks
of single-stream then `two` blocks of two-stream.
single, two: one mode throughout (ablations).
curriculum: one mode, then the other for the rest of the run ("curriculum:single-two" or
"curriculum:two-single"); the ratio S:T splits the run's steps into S parts single-stream and T parts
two-stream, so 1:1 switches at half the steps.

The mode of a step is a function of the step and the run's total steps only, so a resumed run trains the same
modes as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("alternate", "single", "two", "curriculum")
MODES = ("single", "two")
# The values of `semvlp pretrain --mode-schedule`.
MODE_SCHEDULES = ("alternate", "single", "two", "curriculum:single-two", "curriculum:two-single")


@dataclass(frozen=True)
class ModeSchedule:
    kind: str = "alternate"
    single: int = 1          # alternate: blocks of single-stream per cycle; curriculum: share of the steps
    two: int = 1             # alternate: blocks of two-stream per cycle; curriculum: share of the steps
    block_steps: int = 1     # alternate: steps per block
    first: str = "single"    # curriculum: the mode it starts with
    switch_step: int = 0     # curriculum: the first step of the other mode

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.single < 0 or self.two < 0 or self.single + self.two == 0:
            raise ValueError(f"ratio: expected non-negative block counts, not both 0, got {self.single}:{self.two}")
        if self.block_steps < 1:
            raise ValueError(f"block_steps: expected a positive int, got {self.block_steps}")
        if self.first not in MODES:
            raise ValueError(f"first: expected one of {MODES}, got {self.first!r}")
        if self.kind == "curriculum" and (self.single == 0 or self.two == 0 or self.switch_step < 1):
            raise ValueError(f"curriculum: expected both modes to get steps (ratio S:T with S, T > 0 and a switch "
                             f"after step 0), got ratio {self.single}:{self.two}, switch at step {self.switch_step}")

    @classmethod
    def parse(cls, kind: str, ratio: str = "1:1", granularity: str = "step",
              steps_per_epoch: int | None = None, total_steps: int | None = None) -> "ModeSchedule":
        """kind: one of MODE_SCHEDULES; ratio "S:T"; granularity "step", "epoch" or a number of steps (alternate
        only); total_steps: the run's optimizer steps (needed by a curriculum, which switches at a share of them)."""
        try:
            single, two = (int(v) for v in ratio.split(":"))
        except ValueError:
            raise ValueError(f"ratio: expected 'S:T' with two integers (e.g. 1:1, 3:1), got {ratio!r}") from None
        if kind.startswith("curriculum"):
            return cls._curriculum(kind, single, two, granularity, total_steps)
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

    @classmethod
    def _curriculum(cls, kind: str, single: int, two: int, granularity: str,
                    total_steps: int | None) -> "ModeSchedule":
        orders = [k for k in MODE_SCHEDULES if k.startswith("curriculum:")]
        if kind not in orders:
            raise ValueError(f"kind: expected one of {MODE_SCHEDULES}, got {kind!r}")
        if granularity != "step":
            raise ValueError(f"granularity: a curriculum switches once, at the share of the steps the ratio gives; "
                             f"expected the default 'step', got {granularity!r}")
        if single < 1 or two < 1:
            raise ValueError(f"ratio: a curriculum trains both modes, expected S:T with S, T > 0, got {single}:{two}")
        if total_steps is None or total_steps < 2:
            raise ValueError(f"total_steps: a curriculum switches at a share of the run's steps, expected at least "
                             f"2 steps, got {total_steps!r}")
        first = kind.split(":")[1].split("-")[0]
        first_share = single if first == "single" else two
        # Integer arithmetic: the same switch step on every machine, and at every resume.
        switch = total_steps * first_share // (single + two)
        if not 0 < switch < total_steps:
            raise ValueError(f"total_steps: {total_steps} steps are too few to give each mode of ratio "
                             f"{single}:{two} at least one step")
        return cls("curriculum", single, two, 1, first, switch)

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this schedule trains, in the order it first trains them."""
        if self.kind in MODES:
            return (self.kind,)
        if self.kind == "curriculum":
            return (self.first, MODES[1 - MODES.index(self.first)])
        return tuple(m for m, blocks in zip(MODES, (self.single, self.two)) if blocks)

    def mode(self, step: int) -> str:
        if self.kind in MODES:
            return self.kind
        if self.kind == "curriculum":
            return self.modes[0] if step < self.switch_step else self.modes[1]
        position = (step // self.block_steps) % (self.single + self.two)
        return "single" if position < self.single else "two"
