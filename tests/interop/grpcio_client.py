"""Interop client in Python grpcio: calls a duet server's gRPC port with stock gRPC.

Usage: grpcio_client.py HOST:PORT PROTO_ROOT
Generates stubs for grpc/testing/test.proto with grpc_tools, runs the interop cases, exits non-zero
on the first failure.
"""

import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def load_stubs(proto_root):
    out = tempfile.mkdtemp(prefix="duet-grpcio-")
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc", f"-I{proto_root}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}",
        "grpc/testing/test.proto",
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    # The generated package is named `grpc`, like the library: load its modules by path.
    import importlib.util
    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod
    import types
    package = sys.modules.setdefault("grpc.testing", types.ModuleType("grpc.testing"))
    pb2 = load("grpc.testing.test_pb2", os.path.join(out, "grpc/testing/test_pb2.py"))
    package.test_pb2 = pb2
    grpc_mod = load("grpc.testing.test_pb2_grpc", os.path.join(out, "grpc/testing/test_pb2_grpc.py"))
    return pb2, grpc_mod


def main():
    target, proto_root = sys.argv[1], sys.argv[2]
    pb2, stubs = load_stubs(proto_root)
    from google.protobuf import empty_pb2

    channel = grpc.insecure_channel(target)
    stub = stubs.TestServiceStub(channel)
    passed = []

    def payload(n):
        return pb2.Payload(body=b"\0" * n)

    # empty_unary
    assert stub.EmptyCall(empty_pb2.Empty()) == empty_pb2.Empty()
    passed.append("empty_unary")

    # large_unary
    r = stub.UnaryCall(pb2.SimpleRequest(response_size=314159, payload=payload(271828)))
    assert len(r.payload.body) == 314159
    passed.append("large_unary")

    # client_streaming
    r = stub.StreamingInputCall(iter(pb2.StreamingInputCallRequest(payload=payload(n)) for n in [27182, 8, 1828, 45904]))
    assert r.aggregated_payload_size == 74922, r
    passed.append("client_streaming")

    # server_streaming
    sizes = [31415, 9, 2653, 58979]
    req = pb2.StreamingOutputCallRequest(response_parameters=[pb2.ResponseParameters(size=s) for s in sizes])
    assert [len(x.payload.body) for x in stub.StreamingOutputCall(req)] == sizes
    passed.append("server_streaming")

    # ping_pong (requests sent one at a time, each answered before the next)
    import queue
    q = queue.Queue()
    def gen():
        while True:
            item = q.get()
            if item is None:
                return
            yield item
    responses = stub.FullDuplexCall(gen())
    for resp_size, req_size in [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]:
        q.put(pb2.StreamingOutputCallRequest(response_parameters=[pb2.ResponseParameters(size=resp_size)], payload=payload(req_size)))
        assert len(next(responses).payload.body) == resp_size
    q.put(None)
    assert next(responses, None) is None
    passed.append("ping_pong")

    # empty_stream
    assert list(stub.FullDuplexCall(iter([]))) == []
    passed.append("empty_stream")

    # status_code_and_message, special_status_message
    for message in ["test status message", "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"]:
        try:
            stub.UnaryCall(pb2.SimpleRequest(response_status=pb2.EchoStatus(code=2, message=message)))
            raise AssertionError("expected an error")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNKNOWN and e.details() == message, (e.code(), e.details())
    passed.append("status_code_and_message")
    passed.append("special_status_message")

    # custom_metadata
    md = (("x-grpc-test-echo-initial", "test_initial_metadata_value"), ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"))
    r, call = stub.UnaryCall.with_call(pb2.SimpleRequest(response_size=314159, payload=payload(271828)), metadata=md)
    assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in call.initial_metadata(), call.initial_metadata()
    assert ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab") in call.trailing_metadata(), call.trailing_metadata()
    passed.append("custom_metadata")

    # unimplemented_method, unimplemented_service
    for call in [stub.UnimplementedCall, stubs.UnimplementedServiceStub(channel).UnimplementedCall]:
        try:
            call(empty_pb2.Empty())
            raise AssertionError("expected UNIMPLEMENTED")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code()
    passed.append("unimplemented_method")
    passed.append("unimplemented_service")

    # timeout_on_sleeping_server
    slow = pb2.StreamingOutputCallRequest(response_parameters=[pb2.ResponseParameters(size=1, interval_us=10_000_000)], payload=payload(27182))
    try:
        list(stub.FullDuplexCall(iter([slow]), timeout=0.05))
        raise AssertionError("expected DEADLINE_EXCEEDED")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e.code()
    passed.append("timeout_on_sleeping_server")

    # client_compressed_unary and server_compressed_unary, with gzip: the request goes compressed
    # (a server that does not accept gzip would refuse it UNIMPLEMENTED), and grpcio accepts gzip
    # responses, which the server then sends.
    gzip = grpc.insecure_channel(target, compression=grpc.Compression.Gzip)
    r = stubs.TestServiceStub(gzip).UnaryCall(pb2.SimpleRequest(response_size=314159, payload=payload(271828)))
    assert len(r.payload.body) == 314159
    reqs = iter(pb2.StreamingInputCallRequest(payload=payload(n)) for n in [27182, 8, 1828, 45904])
    assert stubs.TestServiceStub(gzip).StreamingInputCall(reqs).aggregated_payload_size == 74922
    passed.append("gzip_unary")
    passed.append("gzip_client_streaming")

    print("grpcio interop passed:", ", ".join(passed))


if __name__ == "__main__":
    main()
