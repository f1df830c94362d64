"""Faces in a photo: detection (Haar cascade), landmarks (MediaPipe face mesh), eye alignment."""
