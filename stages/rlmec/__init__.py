"""RLMEC's data-making pieces (METHODS.md §3): token-level edit alignment (imitation weights), step
splitting and the editor prompts, the two-step minimum-edit procedure, and the ``arith_rules`` stand-in
teacher for the bundled arithmetic data."""
