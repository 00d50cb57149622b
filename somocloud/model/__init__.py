"""The model layer: the EA-LSTM, its inputs and its artifact (used by `train` and `predict`)."""
