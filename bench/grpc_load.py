"""gRPC load driver: closed-loop unary GenerateImages calls for a fixed time, JSON result on stdout.

Started by bench/run.py (one or more processes); usable alone:

    python bench/grpc_load.py --target 127.0.0.1:50051 --token T --concurrency 16 --duration 10

Each of ``--concurrency`` workers sends one call, waits for its answer, and sends the next, like a
wrk connection. Workers are spread over ``--channels`` channels (one HTTP/2 connection each).
Requests are serialized once. Calls still in flight at the end are cancelled and not counted, as
in wrk. Every completed call's latency is kept, and its status code counted: anything but OK is
an error.

Every OK answer is checked: it must parse as a GenerateImagesResponse holding exactly one image
equal, byte for byte, to the PNG the fake upstream serves for ``--image-bytes``
(``png_image(N, 0)``). Answers that do not are counted in ``wrong`` (with a few examples), and
bench/run.py fails the row. The check costs about 1 us per 1 KB answer and 0.1 ms per 1.5 MB
answer (parse 33 us, copy 33 us, compare 35 us), a few percent of a core at the rates reached.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import collections
import json
import sys
import time

import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.testing.fake_upstream import png_image

_METHOD = images_pb2.DESCRIPTOR.services_by_name["ImageService"].methods_by_name["GenerateImages"]
METHOD_PATH = f"/{_METHOD.containing_service.full_name}/{_METHOD.name}"


def build_request(body: dict[str, object]) -> bytes:
    """The serialized GenerateImagesRequest for an OpenAI-style JSON body."""
    request = images_pb2.GenerateImagesRequest()
    for key, value in body.items():
        setattr(request, key, value)
    return request.SerializeToString()


def wrong_answer(raw: bytes, expected: bytes) -> str | None:
    """Why an OK answer is not one image equal to ``expected``, or None when it is."""
    try:
        response = images_pb2.GenerateImagesResponse.FromString(raw)
    except Exception as error:  # a DecodeError, whatever protobuf's backend calls it
        return f"not a GenerateImagesResponse ({len(raw):,} bytes): {error}"
    if len(response.data) != 1:
        return f"{len(response.data)} images, not 1 ({len(raw):,} bytes)"
    image = response.data[0].b64_json
    if image == expected:
        return None
    if len(image) != len(expected):
        return f"image of {len(image):,} bytes, not {len(expected):,}"
    return f"image of the right size ({len(image):,} bytes) but other bytes"


async def run(args: argparse.Namespace) -> dict[str, object]:
    """The JSON-ready result of the closed-loop load run ``args`` describes."""
    request = build_request(json.loads(args.body))
    expected = png_image(args.image_bytes, 0)  # n is 1: the fake's image at index 0
    metadata = (("authorization", f"Bearer {args.token}"),)
    options = [
        # Own subchannel pool: without it, channels to one target share one connection.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]
    channel_count = max(1, min(args.channels, args.concurrency))
    channels = [
        grpc.aio.insecure_channel(args.target, options=options) for _ in range(channel_count)
    ]
    latencies = array.array("d")
    codes: collections.Counter[str] = collections.Counter()
    received_bytes = 0
    wrong = 0
    wrong_examples: list[str] = []
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(channel.channel_ready() for channel in channels))
        calls = [channel.unary_unary(METHOD_PATH) for channel in channels]
        if args.start_at:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))

        async def worker(index: int) -> None:
            nonlocal received_bytes, wrong
            call = calls[index % len(calls)]
            while True:
                started = time.perf_counter()
                try:
                    response = await call(request, metadata=metadata, timeout=args.timeout)
                except grpc.aio.AioRpcError as error:
                    latencies.append(time.perf_counter() - started)
                    codes[error.code().name] += 1
                    continue
                latencies.append(time.perf_counter() - started)  # the check is not latency
                codes["OK"] += 1
                received_bytes += len(response)
                problem = wrong_answer(response, expected)
                if problem is not None:
                    wrong += 1
                    if len(wrong_examples) < 3:
                        wrong_examples.append(problem)

        started = time.perf_counter()
        tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.duration)
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "codes": dict(codes),
        "bytes": received_bytes,
        "wrong": wrong,
        "wrong_examples": wrong_examples,
        # Raw latencies (seconds, float64) so several processes can be merged exactly.
        "latencies_b64": base64.b64encode(latencies.tobytes()).decode(),
    }


def main() -> None:
    """The command line: runs the load and writes its result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC door")
    parser.add_argument("--token", required=True)
    parser.add_argument("--body", required=True, help="request fields as JSON")
    parser.add_argument(
        "--image-bytes",
        type=int,
        required=True,
        help="the fake upstream's --image-bytes: every OK answer must carry that exact PNG",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, seconds")
    parser.add_argument("--start-at", type=float, default=0.0, help="unix time to start load")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
