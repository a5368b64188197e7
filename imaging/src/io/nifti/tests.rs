//! Unit tests of the NIfTI reader and writer.
