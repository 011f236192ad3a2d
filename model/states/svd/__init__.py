"""The svd kind of the state family: the truncated-SVD factors of a user's weighted history
(``state``), updated by Brand's thin-SVD block update (``brand``, whose one-row case solves
the secular equation: ``secular``), and the `svd` hybrid's window of latest events
(``recent``). ``model.states`` exports its classes (the codec, ``model.states.blob``,
reads windows too, so this package imports nothing itself)."""
