"""Shared plumbing every layer uses: errors, image files, atomic writes, the manifest, emotion names,
the RaFD naming rule, run information and run state, a bounded thread pool, TensorFlow's log switch."""
