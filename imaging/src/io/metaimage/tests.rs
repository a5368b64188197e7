//! Unit tests of the MetaImage reader and writer.
