"""Synthetic RaFD-like faces for the demo and the tests (``python -m efr.data.synthetic``)."""
