"""Models: the seed CNN and the model registry, transfer backbones, EFR's own FER2013 backbone (efrnet),
hand-made features, the fusion model, model files with EFR metadata, LiteRT conversion."""
