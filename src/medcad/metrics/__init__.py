"""Metrics as pure functions over arrays: classification (ROC, AUC, F1...), detection (FROC, CPM), baselines."""
