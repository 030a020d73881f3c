"""Authentication, token lifecycle, health and reflection on the real core."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib

import grpc
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.server import open_core, start_grpc_server
from tests.conftest import bearer
from tests.grpc_errors import details_of

LIST = images_pb2.ListModelsRequest()


async def auth_error(stub, metadata):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModels(LIST, metadata=metadata)
    return details_of(caught.value)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "MISSING_API_KEY"),
        ([("authorization", "")], "MISSING_API_KEY"),
        ([("authorization", "Basic dXNlcjpwYXNz")], "INVALID_API_KEY"),
        ([("authorization", "Bearer ")], "INVALID_API_KEY"),
        ([("authorization", "Bearer aqk-not-a-real-token")], "INVALID_API_KEY"),
    ],
)
async def test_missing_or_unknown_tokens_are_unauthenticated(stub, metadata, reason):
    found = await auth_error(stub, metadata)
    assert found.code == grpc.StatusCode.UNAUTHENTICATED and found.reason == reason


async def test_valid_token_is_admitted(stub, secret):
    listed = await stub.ListModels(LIST, metadata=bearer(secret))
    assert listed.data


async def test_expired_token_is_refused(stub, gateway):
    _, secret = await gateway.tokens.create("short-lived", expires_in=0.05)
    await asyncio.sleep(0.1)
    found = await auth_error(stub, bearer(secret))
    assert found.code == grpc.StatusCode.UNAUTHENTICATED and found.reason == "EXPIRED_API_KEY"


async def test_revoked_token_is_refused_at_once(stub, gateway, secret):
    await stub.ListModels(LIST, metadata=bearer(secret))  # now cached
    token = (await gateway.tokens.list())[0]
    revoked = await gateway.tokens.revoke(token.id)
    assert revoked.revoked_at is not None
    found = await auth_error(stub, bearer(secret))
    assert found.code == grpc.StatusCode.UNAUTHENTICATED and found.reason == "REVOKED_API_KEY"


async def test_cli_revocation_reaches_a_running_core(
    config: GatewayConfig, database_url: str, capsys
):
    await asyncio.to_thread(
        cli.main, ["tokens", "create", "--name", "ops", "--database-url", database_url]
    )
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    no_cache = dataclasses.replace(config, token_cache_seconds=0.0)
    async with open_core(no_cache, database_url=database_url) as gateway:
        server = await start_grpc_server(gateway, port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                from aqueduct.images.v1 import images_pb2_grpc

                stub = images_pb2_grpc.ImageServiceStub(channel)
                assert (await stub.ListModels(LIST, metadata=bearer(secret))).data
                await asyncio.to_thread(
                    cli.main, ["tokens", "revoke", "ops", "--database-url", database_url]
                )
                found = await auth_error(stub, bearer(secret))
                assert found.reason == "REVOKED_API_KEY"
        finally:
            await server.stop(0)


def test_cli_tokens_create_list_revoke(tmp_path: pathlib.Path, capsys):
    data = ["--data-dir", str(tmp_path)]
    cli.main(
        ["tokens", "create", "--name", "alice", "--expires-in", "30d", "--models", "demo", *data]
    )
    created = capsys.readouterr()
    secret = created.out.strip().splitlines()[-1]
    assert secret.startswith("aqk-") and len(secret) > 40
    cli.main(["tokens", "list", *data])
    listing = capsys.readouterr().out
    assert "alice" in listing and "active" in listing and "demo" in listing
    assert secret not in listing
    cli.main(["tokens", "revoke", "alice", *data])
    cli.main(["tokens", "list", *data])
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["tokens", "revoke", "bob", *data])


@pytest.mark.parametrize("text", ["0", "abc", "-5m", "10y"])
def test_bad_durations_are_refused(text):
    with pytest.raises(Exception, match="not a duration"):
        cli.parse_duration(text)


def test_durations():
    assert [cli.parse_duration(t) for t in ["90", "90s", "15m", "12h", "30d", "2w"]] == [
        90,
        90,
        900,
        43200,
        2592000,
        1209600,
    ]


async def test_only_the_hash_of_a_secret_is_stored(gateway, secret):
    async with gateway.engine.connect() as connection:
        dump = "\n".join(
            str(tuple(row)) for row in await connection.exec_driver_sql("SELECT * FROM tokens")
        )
    assert secret not in dump and secret.removeprefix("aqk-") not in dump


async def test_health_needs_no_token(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "aqueduct.images.v1.ImageService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_describes_the_service_like_grpcurl(channel):
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="aqueduct.images.v1.ImageService"
        ),
    ]
    replies = [reply async for reply in reflection.ServerReflectionInfo(iter(requests))]
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"aqueduct.images.v1.ImageService", "grpc.health.v1.Health"} <= services
    # Rebuild the descriptors from what reflection sent, as grpcurl does.
    pool = descriptor_pool.DescriptorPool()
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    pending = {f.name: f for f in files}
    while pending:
        for name, proto in list(pending.items()):
            if all(dep not in pending for dep in proto.dependency):
                pool.Add(proto)
                del pending[name]
    service = pool.FindServiceByName("aqueduct.images.v1.ImageService")
    method = service.methods_by_name["GenerateImages"]
    assert (
        method.input_type.fields_by_name["prompt"].type
        == descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    )
    assert method.output_type.full_name == "aqueduct.images.v1.GenerateImagesResponse"
    # The HTTP bindings travel with the descriptors (what a transcoder needs).
    options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
    rule = options.Extensions[annotations_pb2.http]
    assert rule.post == "/v1/images/generations" and rule.body == "*"


async def test_secrets_never_reach_the_logs(stub, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    _, secret = await gateway.tokens.create("logged")
    await stub.ListModels(LIST, metadata=bearer(secret))
    await auth_error(stub, bearer(secret + "x"))
    assert secret not in caplog.text
