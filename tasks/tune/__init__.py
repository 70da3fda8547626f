"""Tune: an Optuna search over XGBoost parameters, in reproducible batches, one Prefect task per trial.

The search asks a batch of `parallelism` trials, runs them at once, tells all results, and
repeats. Parameters are sampled in the asking thread and the sampler's randomness for trial
n comes from (seed, n, parameter), so thread scheduling never changes which trials run. Each
trial prunes against a frozen view of the trials finished before its batch began, never
against its batch siblings, so pruning decisions are reproducible too.

Modules: space, sampler, study, data, trial, search, results, run.
"""
