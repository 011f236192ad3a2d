"""Interaction logs: loading, fetching the MovieLens files, the per-user event layout and
context windows. (Not named `data`: the repository git-ignores every `data/` folder.)
"""
