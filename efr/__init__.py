"""Emotional-Facial-Recognition: crop, split, augment, train, evaluate and predict facial expressions."""

__version__ = "0.1.0"
