"""Datasets: subject-disjoint splits, augmentation (the transforms and the augment stage), tf.data
pipelines over Dataset folders, synthetic RaFD-like faces, the FER2013 reader."""
