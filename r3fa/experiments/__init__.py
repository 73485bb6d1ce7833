"""Experiments: a grid of data/training variants x seeds, trained on the same step budget, each checkpoint
chosen on the validation split only, evaluated on a held-out benchmark fold, and compared with intervals.

`config` reads the grid, `runs` trains/selects/evaluates one (variant, seed), `stats` holds the interval
estimators and `comparison` turns finished runs into the report. Building shard sets and orchestration are
above this package (`flows/experiment.py`), since `r3fa` never imports `pipelines`.
"""
