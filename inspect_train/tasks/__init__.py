"""Downstream tasks (classify, segment): train on real + fresh synthetic batches, evaluate on the test split."""
