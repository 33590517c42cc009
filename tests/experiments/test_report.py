"""The study reports from fabricated per-run rows (test input only): the comparisons and their text, the held-out
columns, and the files."""

import json

import pytest

from semvlp.experiments.ablation import held_out_columns, row, rows_in_mode
from semvlp.experiments.report import compare, comparison_text, markdown, write_reports


def _rows(values: dict[str, list[float]], metric: str = "qa_acc_fine") -> list[dict]:
    """One row per (schedule, seed) with `metric` from `values`, and 60 s each."""
    one_mode = {"single": ["single"], "two": ["two"]}
    return [{"schedule": schedule, "seed": seed, "mode": "single",
             "trained_modes": one_mode.get(schedule, ["single", "two"]), metric: value, "seconds": 60.0}
            for schedule, seeds in values.items() for seed, value in enumerate(seeds)]


def test_a_lead_is_clear_only_beyond_the_sum_of_the_standard_deviations():
    # means 0.8 and 0.7, standard deviations 0.02 each: a 10-point lead against a 4-point spread
    clear = compare(_rows({"single": [0.68, 0.70, 0.72], "alternate": [0.78, 0.80, 0.82]}))["leads"]
    assert [(c["metric"], c["leader"], c["next"], c["clear"]) for c in clear] == [
        ("qa_acc_fine", "alternate", "single", True)]
    assert clear[0]["difference"] == pytest.approx(0.1) and clear[0]["spread"] == pytest.approx(0.04)
    # the same means, standard deviations 0.1 each: within the spread
    within = compare(_rows({"single": [0.6, 0.7, 0.8], "alternate": [0.7, 0.8, 0.9]}))["leads"]
    assert within[0]["leader"] == "alternate" and within[0]["clear"] is False
    # one seed has no spread to judge by
    single_seed = _rows({"single": [0.7], "alternate": [0.8]})
    assert compare(single_seed)["leads"][0]["clear"] is None
    assert "by 10.0 points (spread 0.0): not judged (one seed)." in "\n".join(comparison_text(single_seed))


def test_switching_is_compared_with_the_best_one_mode_schedule():
    rows = _rows({"single": [0.70, 0.71, 0.72], "two": [0.50, 0.51, 0.52], "alternate": [0.60, 0.61, 0.62],
                  "single-then-two": [0.80, 0.81, 0.82]})
    [switching] = compare(rows)["switching"]
    assert (switching["leader"], switching["next"], switching["switching_leads"], switching["clear"]) == \
        ("single-then-two", "single", True, True)
    text = "\n".join(comparison_text(rows))
    assert "## Does switching between the two modes help?" in text
    assert "switching leads on 1 of 1 metrics, clearly on 1; a one-mode schedule leads clearly on 0." in text
    assert ("- QA, fine-grained (attribute, existence): **single-then-two** (81.0 ± 1.0) leads single (71.0 ± 1.0) "
            "by 10.0 points (spread 2.0): clear.") in text
    # Without a switching schedule there is no switching verdict; a row that does not say which modes it trained
    # (a report of an older runner) counts as neither.
    assert compare(_rows({"single": [0.7], "two": [0.5]}))["switching"] == []
    unsaid = [{k: v for k, v in r.items() if k != "trained_modes" or len(v) == 1} for r in rows]
    assert compare(unsaid)["switching"] == []


def test_one_mode_schedule_ahead_is_reported_as_such():
    rows = _rows({"single": [0.70, 0.71, 0.72], "alternate": [0.60, 0.65, 0.70]})
    text = "\n".join(comparison_text(rows))
    assert "switching leads on 0 of 1 metrics, clearly on 0; a one-mode schedule leads clearly on 0." in text
    assert "by 6.0 points (spread 6.0): within the spread between seeds." in text


def test_held_out_columns_take_one_mode_of_the_pretraining_results():
    results = {"val/two/itm_accuracy": 0.9, "val/two/itm_accuracy_relation": 0.6, "val/single/itm_accuracy": 0.8,
               "novel/two/grounding_accuracy": 0.99}
    assert held_out_columns(results, "two") == {"val_itm_accuracy": 0.9, "val_itm_accuracy_relation": 0.6,
                                                "novel_grounding_accuracy": 0.99}


def test_table_has_held_out_rows_per_caption_kind_and_the_wall_time():
    rows = _rows({"single": [0.7, 0.8], "alternate": [0.6, 0.6]}, "val_itm_accuracy_relation")
    for r in rows:
        r.update(val_itm_accuracy=0.9, val_grounding_accuracy=1.0, novel_itm_accuracy=0.85)
    table = markdown(rows, {"name": "schedule_study", "pretrain_steps": 700, "ranks": 2,
                            "pretrain_options": "--lr 2e-3"})
    lines = table.splitlines()
    assert lines[0] == "# Pretraining schedules: schedule_study"
    assert "Wall time: 4.0 min for the 4 runs" in table and "`--lr 2e-3`" in table
    held_out = [line.split(" |")[0] for line in lines if line.startswith("| pretrained ITM") or
                line.startswith("| phrase")]
    assert held_out == ["| pretrained ITM (held-out scenes)", "| pretrained ITM, relation captions (held-out scenes)",
                        "| phrase grounding (held-out scenes)", "| pretrained ITM (held-out combinations)"]
    assert "| pretrained ITM, relation captions (held-out scenes) | **75.0 ± 7.1** | 60.0 ± 0.0 |" in table


def test_write_reports_names_its_files(tmp_path):
    rows = _rows({"single": [0.7, 0.8], "alternate": [0.6, 0.95]})
    paths = write_reports(rows, {"name": "schedule_study"}, tmp_path, name="schedule_study")
    assert [p.name for p in paths] == ["schedule_study.json", "schedule_study.md", "schedule_study.png"]
    report = json.loads(paths[0].read_text())
    assert report["wall_seconds"] == 240.0 and report["comparison"]["leads"][0]["leader"] == "alternate"
    assert paths[2].stat().st_size > 10_000
    with pytest.raises(ValueError, match="rows: expected at least one"):
        write_reports([], {}, tmp_path)


def _evaluated(val_qa: float, itm: float) -> dict:
    """One mode's downstream metrics as the runner records them (fabricated), QA 0.5 on test."""
    qa = {"accuracy": 0.5, "granularity/fine": 0.5, "granularity/high": 0.5}
    return {"qa": {"val": {"accuracy": val_qa}, "test": qa, "novel": {"accuracy": 0.5}},
            "itm": {"accuracy": itm}, "retrieval": {}}


def test_each_mode_sets_switching_against_that_mode_alone(tmp_path):
    # alternate's val QA picks its single-stream mode (ITM 0.80, behind single only's 0.90), but in two-stream mode
    # (ITM 0.85) it is ahead of two only (0.60): only the mode-by-mode comparison can say so.
    rows = []
    for seed, wobble in enumerate((-0.01, 0.01)):
        rows.append(row("single", seed, {"single": _evaluated(0.9, 0.90 + wobble)},
                        {"val/single/itm_accuracy": 0.95 + wobble}, 60.0))
        rows.append(row("two", seed, {"two": _evaluated(0.9, 0.60 + wobble)},
                        {"val/two/itm_accuracy": 0.70 + wobble}, 60.0))
        rows.append(row("alternate", seed, {"single": _evaluated(0.9, 0.80 + wobble),
                                            "two": _evaluated(0.8, 0.85 + wobble)},
                        {"val/single/itm_accuracy": 0.90 + wobble, "val/two/itm_accuracy": 0.88 + wobble}, 60.0))
    assert {r["mode"] for r in rows if r["schedule"] == "alternate"} == {"single"}
    in_two = rows_in_mode(rows, "two")
    assert [(r["schedule"], r["mode"], r["itm_acc"], r["val_itm_accuracy"]) for r in in_two] == [
        ("two", "two", 0.59, 0.69), ("alternate", "two", 0.84, 0.87),
        ("two", "two", 0.61, 0.71), ("alternate", "two", 0.86, 0.89)]
    assert [r["schedule"] for r in rows_in_mode(rows, "single")] == ["single", "alternate"] * 2

    overall = {c["metric"]: c for c in compare(rows)["switching"]}
    assert overall["itm_acc"]["leader"] == "single" and overall["itm_acc"]["clear"]
    in_mode = {c["metric"]: c for c in compare(in_two)["switching"]}
    assert (in_mode["itm_acc"]["leader"], in_mode["itm_acc"]["next"], in_mode["itm_acc"]["clear"]) == \
        ("alternate", "two", True)

    modes = {mode: rows_in_mode(rows, mode) for mode in ("single", "two")}
    text = markdown(rows, {"name": "ablation"}, mode_rows=modes)
    two_section = text.split("### two-stream mode")[1].split("Per run")[0]
    assert "| ITM accuracy (test) | 60.0 ± 1.4 | **85.0 ± 1.4** |" in two_section
    # equal QA is a lead for neither
    assert ("The best switching schedule against two only: switching leads on 2 of 5 metrics, clearly on 2; a "
            "one-mode schedule leads clearly on 0.") in two_section
    assert "- QA, fine-grained (attribute, existence): alternate and two tie." in two_section
    assert "- pretrained ITM (held-out scenes): alternate over two, 18.0 points (spread 2.8), clear." in two_section
    assert ("The best switching schedule against single only: switching leads on 0 of 5 metrics, clearly on 0; a "
            "one-mode schedule leads clearly on 2.") in text
    assert "## Each mode on its own" not in markdown(rows, {"name": "ablation"})

    report = json.loads(write_reports(rows, {"name": "ablation"}, tmp_path, mode_rows=modes)[0].read_text())
    assert report["modes"]["two"]["summary"]["alternate"]["itm_acc"]["mean"] == pytest.approx(0.85)
    assert report["modes"]["two"]["comparison"]["switching"][0]["leader"] == "alternate"
