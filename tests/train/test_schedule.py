import pytest

from semvlp.train.schedule import ModeSchedule


def _modes(schedule, n):
    return "".join("s" if schedule.mode(step) == "single" else "t" for step in range(n))


def test_alternate_per_step():
    assert _modes(ModeSchedule.parse("alternate"), 6) == "ststst"


def test_ratio_and_block_length():
    assert _modes(ModeSchedule.parse("alternate", "2:1", "3"), 12) == "sssssstttsss"
    assert _modes(ModeSchedule.parse("alternate", "1:3"), 8) == "sttts" + "ttt"


def test_per_epoch():
    assert _modes(ModeSchedule.parse("alternate", "1:1", "epoch", steps_per_epoch=4), 10) == "sssstttt" + "ss"


@pytest.mark.parametrize("kind", ["single", "two"])
def test_one_mode_for_ablations(kind):
    assert {ModeSchedule.parse(kind).mode(s) for s in range(10)} == {kind}


@pytest.mark.parametrize("args,match", [
    (("both",), "kind"), (("alternate", "1-1"), "ratio"), (("alternate", "0:0"), "ratio"),
    (("alternate", "1:1", "often"), "granularity"), (("alternate", "1:1", "epoch"), "steps per epoch"),
])
def test_bad_schedules_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        ModeSchedule.parse(*args)
