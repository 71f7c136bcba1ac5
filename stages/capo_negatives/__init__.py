"""CaPO negatives stage: context-dependence detection, context corruptions and the runner."""
