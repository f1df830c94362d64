"""Stage 4, prediction (predict.py, `efr predict`): the emotion of every face in photos, folders, videos
or a camera.  ``efr.predict.predict`` is the entry point."""

from efr.predict.run import predict  # noqa: F401  (the public entry point: efr.predict.predict)
