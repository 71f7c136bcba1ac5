"""Everything about checkpoints, in one place.

- ``io_plugin.py``: the atomic checkpoint IO plugin (a Lightning plugin);
- ``sharded_strategy.py``: the FSDP strategy that saves sharded checkpoints atomically;
- ``preload_check.py``: the start-up check of a checkpoint (corruption, shape, kind) before anything is written;
- ``consolidate.py``: a sharded checkpoint into one file.
"""
