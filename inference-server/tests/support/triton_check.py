"""KServe v2 checks of a running medmae-serve with the unmodified tritonclient[grpc] and onnxruntime as reference.

Run: $MEDMAE_PYTHON triton_check.py HOST:PORT MODEL_ONNX   (prints "triton ok" and exits 0 when every check passes)
"""
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, onnx_path = sys.argv[1], sys.argv[2]
c = grpcclient.InferenceServerClient(url=url)
assert c.is_server_live(), "server not live"
assert c.is_server_ready(), "server not ready"
assert c.is_model_ready("demo"), "model demo not ready"
meta = c.get_server_metadata()
assert meta.name == "medmae-serve", meta
assert "model_configuration" in meta.extensions, meta
mm = c.get_model_metadata("demo")
assert mm.name == "demo" and mm.versions == ["1"], mm
assert [(t.name, t.datatype, list(t.shape)) for t in mm.inputs] == [("input", "FP32", [-1, 1, 16, 16, 16])], mm
assert [(t.name, t.datatype, list(t.shape)) for t in mm.outputs] == [("logits", "FP32", [-1, 3, 16, 16, 16])], mm
cfg = c.get_model_config("demo").config
assert cfg.parameters["roi_size"].string_value == "[16,16,16]", cfg
assert '"rim"' in cfg.parameters["labels"].string_value, cfg

x = np.random.default_rng(7).normal(20, 30, size=(2, 1, 16, 16, 16)).astype(np.float32)
inp = grpcclient.InferInput("input", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
res = c.infer("demo", [inp], outputs=[grpcclient.InferRequestedOutput("logits")], request_id="r-1")
got = res.as_numpy("logits")
ref = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
assert got.shape == ref.shape, (got.shape, ref.shape)
err = float(np.abs(got - ref).max())
assert err < 1e-5, f"max abs diff {err}"
assert res.get_response().id == "r-1"


def expect(code, fn, text):
    try:
        fn()
    except InferenceServerException as e:
        assert e.status() == code, (e.status(), e.message())
        assert text in e.message(), (text, e.message())
        return
    raise AssertionError(f"expected {code}")


expect("StatusCode.NOT_FOUND", lambda: c.get_model_metadata("nope"), "unknown model")
expect("StatusCode.NOT_FOUND", lambda: c.infer("nope", [inp]), "unknown model")
bad = grpcclient.InferInput("input", [1, 1, 8, 8, 8], "FP32")
bad.set_data_from_numpy(np.zeros((1, 1, 8, 8, 8), np.float32))
expect("StatusCode.INVALID_ARGUMENT", lambda: c.infer("demo", [bad]), "does not match the model input")
wrong = grpcclient.InferInput("input", [1, 1, 16, 16, 16], "FP64")
wrong.set_data_from_numpy(np.zeros((1, 1, 16, 16, 16), np.float64))
expect("StatusCode.INVALID_ARGUMENT", lambda: c.infer("demo", [wrong]), "datatype FP64 is not accepted")
# still serving after the errors
again = c.infer("demo", [inp]).as_numpy("logits")
assert np.array_equal(again, got)
print("triton ok", err)
