# Embeddings, probes, reconstruction, interpolation, manipulation, timing, baselines, report.
