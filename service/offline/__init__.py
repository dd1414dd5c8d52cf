"""The data scientist's tools over the decision log: export, off-policy evaluation of a
candidate against the active version and baselines, and the Open Bandit Dataset import."""
