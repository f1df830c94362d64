"""Stage 3, training (efe_cnn.py, `efr train`): one run or subject-disjoint K-fold cross-validation."""
