"""Neutral process-level helpers shared by every package: the distributed runtime (`Dist`), the
allocator and transparent-huge-page levers, the user-input error type. Imports nothing of ours."""
