"""Dataset building: from a mix config to a verified shard set (see docs/usage-shards.md).

One job per module, in the order a build runs them:
`mix` (the config) -> `plan` (every sample named, split, shuffled, cut into shards) -> `runner` (Dask, one task
per shard) -> `shard` (one shard: `samples` makes records through the readers, augmentation and
`synthesis_stage`; `writer` + `index` write the tar and its DALI index; `tables` the Parquet) -> `build`
(resume, rejections, `manifest`). `verify` and `inspect` read a finished set; `r3fa.atomic` holds the atomic writes.
"""
