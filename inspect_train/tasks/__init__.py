"""Downstream tasks (classify, segment, detect): train on real + fresh synthetic batches, evaluate on the test split."""
