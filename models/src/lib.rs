//! tch implementations of medmae's networks; parameter names follow `spec::weights` exactly.
