"""The dataset-agnostic machinery of an evaluation run, shared by `evaluation.coco` and `evaluation.lvis`.

- `errors`: InputError (one line, exit code 2);
- `distributed`: torchrun ranks (Dist);
- `store`: the run directory's fingerprint and durable, resumable per-image partial results;
- `download`: resumable, checksummed downloads and safe extraction;
- `run`: the detector over a dataset's (sharded) images into the store, then the dataset's scorer;
- `cli`: the command-line options and start-up every evaluation command shares, the family's protocol
  applied to what the command line leaves open (evaluation/protocols.py), the one-line error exit;
- `summary`: what COCO and LVIS print and record alike (summary header, parity, mask columns).

A dataset package supplies a dataset (`runner.run.Dataset`) and a scorer (`runner.run.Scorer`).
"""
