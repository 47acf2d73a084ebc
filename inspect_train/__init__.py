"""inspect-train: few-shot industrial inspection with in-loop synthetic defects."""

__version__ = "0.1.0"
