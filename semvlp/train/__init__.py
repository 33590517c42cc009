"""Pretraining under DeepSpeed: process groups, engine set-up, the mode schedule, checkpoints, metrics, the loop."""

from .schedule import ModeSchedule

__all__ = ["ModeSchedule"]
