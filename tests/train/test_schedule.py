import pytest

from semvlp.train.schedule import KINDS, MODE_SCHEDULES, ModeSchedule


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


@pytest.mark.parametrize("kind,ratio,total,expected", [
    ("curriculum:single-two", "1:1", 10, "ssssstttt" + "t"),
    ("curriculum:two-single", "1:1", 10, "ttttt" + "sssss"),
    ("curriculum:single-two", "3:1", 8, "ssssss" + "tt"),
    ("curriculum:two-single", "3:1", 8, "tt" + "ssssss"),  # the ratio stays single : two whichever comes first
    ("curriculum:single-two", "1:1", 7, "sss" + "tttt"),
])
def test_curriculum_switches_once_at_the_ratio_share_of_the_steps(kind, ratio, total, expected):
    assert _modes(ModeSchedule.parse(kind, ratio, total_steps=total), total) == expected


def test_curriculum_mode_is_a_function_of_step_and_total_steps():
    # A resumed run parses its schedule again from the same options: every step gets the mode of the
    # uninterrupted run, whatever step it resumes at.
    uninterrupted = [ModeSchedule.parse("curriculum:two-single", total_steps=20).mode(s) for s in range(20)]
    for resume_at in (0, 7, 10, 11, 19):
        resumed = ModeSchedule.parse("curriculum:two-single", total_steps=20)
        assert [resumed.mode(s) for s in range(resume_at, 20)] == uninterrupted[resume_at:]
    assert uninterrupted.index("single") == 10
    assert [ModeSchedule.parse("curriculum:two-single", total_steps=40).mode(s) for s in range(20)] == ["two"] * 20


@pytest.mark.parametrize("kind,ratio,modes", [
    ("alternate", "1:1", ("single", "two")), ("alternate", "3:1", ("single", "two")), ("alternate", "1:0", ("single",)),
    ("alternate", "0:2", ("two",)), ("single", "1:1", ("single",)), ("two", "1:1", ("two",)),
    ("curriculum:single-two", "1:1", ("single", "two")), ("curriculum:two-single", "1:3", ("two", "single")),
])
def test_modes_are_the_ones_trained_in_order(kind, ratio, modes):
    schedule = ModeSchedule.parse(kind, ratio, total_steps=12)
    assert schedule.modes == modes
    assert tuple(dict.fromkeys(schedule.mode(s) for s in range(12))) == modes


def test_every_command_line_value_parses():
    assert {ModeSchedule.parse(kind, total_steps=4).kind for kind in MODE_SCHEDULES} == set(KINDS)


@pytest.mark.parametrize("args,kwargs,match", [
    (("curriculum:single-two",), {}, "total_steps"),
    (("curriculum:single-two",), {"total_steps": 1}, "total_steps"),
    (("curriculum:single-two", "1:9"), {"total_steps": 5}, "too few"),
    (("curriculum:single-two", "1:0"), {"total_steps": 10}, "both modes"),
    (("curriculum:single-two", "1:1", "epoch"), {"total_steps": 10, "steps_per_epoch": 2}, "granularity"),
    (("curriculum:three-two",), {"total_steps": 10}, "kind"),
    (("curriculum",), {"total_steps": 10}, "kind"),
])
def test_bad_curricula_are_rejected(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModeSchedule.parse(*args, **kwargs)
