"""Evaluation: metrics and plots, the HTML report, confidence intervals, cross-dataset evaluation,
clustering."""
