"""Model folders shipped with edgellm; `edgellm.load(NAME)` finds them by folder name."""
