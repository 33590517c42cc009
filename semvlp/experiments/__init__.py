"""Studies run on top of the library (the pretraining-schedule ablation) and their reports."""
