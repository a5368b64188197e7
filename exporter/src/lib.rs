//! ONNX export of medmae models without libtorch.
