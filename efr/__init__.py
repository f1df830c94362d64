"""Emotional-Facial-Recognition: crop, split, augment, train, evaluate and predict facial expressions."""

import os

# TensorFlow 2.21's oneDNN CPU kernels corrupt memory (segmentation fault or "double free"
# abort inside fit) when training the kernel of a 1x1 convolution with stride 2 on inputs of
# 64x64 and larger: the shortcut convolutions of the FER2013 mini-Xception and of ResNet50
# (see the transfer-learning notes in docs/transfer.md).  TensorFlow reads this switch once, when
# it is first imported, so it is set here, before any EFR module imports it.  A user who
# sets TF_ENABLE_ONEDNN_OPTS=1 explicitly keeps their choice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# TensorFlow's C++ start-up lines (CUDA probing, CPU features) are hidden unless a script
# is run with --verbose: see efr.io.tfquiet.  Also before anything imports TensorFlow.
from efr.io import tfquiet  # noqa: E402

tfquiet.install()

__version__ = "0.1.0"
