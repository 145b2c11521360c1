"""Process activity from /proc: the sampler (sampler.py), the metric columns (columns.py) and
the windows of samples that become ``proc_volume@1`` volumes (volume.py)."""
