"""The `r3fa` command: one sub-module per command group, each a thin layer over the library and pipelines."""
