"""Experiments on real data that measure the method (not steps of the product pipeline).

`uscrn`: EA-LSTM vs random forest, climatology and persistence at held-out USCRN stations (2020).
"""
