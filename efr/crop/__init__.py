"""Stage 1, cropping (crop.py, `efr crop`): faces out of raw photos into a subject-disjoint dataset."""
