"""Learning parts of Tactful: featurization, the VW policy, reward shaping.

Plain Python and numpy: nothing here imports Flask or the store, so every piece can be used from
a notebook or a script.
"""
