"""Stage entry points: `python -m pipeline.stages.<name>`; each is thin (parse, load, call, write, log)."""
