"""Versioned schemas of what the project writes: the per-sample Parquet, manifest.json and nme.json."""
