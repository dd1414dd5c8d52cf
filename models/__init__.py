"""Learning parts of Tactful: featurization, the VW policy, reward shaping, the baselines the
simulator compares against, and off-policy estimation (`ope/`).

Plain Python, numpy, scipy and scikit-learn: nothing here imports Flask or anything of `service/`,
so every piece can be used from a notebook or a script.
"""
