"""Test and benchmark tooling: generated songs with ground truth, MIREX scoring, the FMA
reference extraction, audio encoding. Not part of the product; the demo uses it through
:func:`testkit.songs.demo_set`-style narrow calls only."""
