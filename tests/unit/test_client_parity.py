"""Client and AsyncClient offer the same public API; the async one awaits where the other blocks."""

import inspect
from typing import Any, Unpack

import pytest

from leash.client import AsyncClient, Client, JobOptions, job_spec
from leash.client._pipeline import AsyncPipeline, Pipeline

PROPERTIES = {"welcome", "closed"}  # read without I/O in both
# Returns a context manager (``with`` / ``async with``), its kind per client.
CONTEXT_MANAGERS = {"pipeline"}


def public_names(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def signature(cls: type, name: str) -> inspect.Signature:
    return inspect.signature(getattr(cls, name))


def test_both_clients_have_the_same_public_names() -> None:
    assert public_names(Client) == public_names(AsyncClient)


@pytest.mark.parametrize(
    "name", sorted(name for name in public_names(Client) if callable(getattr(Client, name, None)))
)
def test_each_method_takes_the_same_parameters(name: str) -> None:
    blocking, asynchronous = signature(Client, name), signature(AsyncClient, name)
    assert list(blocking.parameters.values()) == list(asynchronous.parameters.values())
    if name not in CONTEXT_MANAGERS:
        assert blocking.return_annotation == asynchronous.return_annotation


@pytest.mark.parametrize(
    "name", sorted(name for name in public_names(Client) if callable(getattr(Client, name, None)))
)
def test_the_async_client_awaits_every_call(name: str) -> None:
    blocking: Any = getattr(Client, name)
    asynchronous: Any = getattr(AsyncClient, name)
    assert not inspect.iscoroutinefunction(blocking)
    if name in CONTEXT_MANAGERS:
        assert not inspect.iscoroutinefunction(asynchronous)
        returned = signature(AsyncClient, name).return_annotation
        assert inspect.iscoroutinefunction(returned.__aenter__)
        assert hasattr(signature(Client, name).return_annotation, "__enter__")
        return
    assert inspect.iscoroutinefunction(asynchronous), f"AsyncClient.{name} is not async"


def test_both_pipelines_push_with_the_parameters_of_push() -> None:
    for cls in (Client, AsyncClient):
        pipeline = signature(cls, "pipeline").return_annotation
        push = list(signature(cls, "push").parameters.values())
        assert list(inspect.signature(pipeline.push).parameters.values()) == push


def test_every_push_and_job_spec_take_the_job_options_defined_once() -> None:
    pushes = [Client.push, AsyncClient.push, Pipeline.push, AsyncPipeline.push, job_spec]
    for push in pushes:
        options = inspect.signature(push).parameters["options"]
        assert options.kind is inspect.Parameter.VAR_KEYWORD
        assert options.annotation == Unpack[JobOptions]


def test_the_constructors_match() -> None:
    assert signature(Client, "__init__") == signature(AsyncClient, "__init__")


def test_both_are_context_managers() -> None:
    assert hasattr(Client, "__enter__") and hasattr(Client, "__exit__")
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(AsyncClient.__aexit__)


def test_the_comparison_sees_the_methods_it_should() -> None:
    callables = {name for name in public_names(Client) if callable(getattr(Client, name, None))}
    expected = {"push", "push_many", "fetch", "fetch_many", "ack", "ack_many", "fail", "extend"}
    expected |= {"release", "get_job", "close", "connect", "from_url", "from_env", "beat"}
    expected |= {"result"}
    expected |= {"create_batch", "commit_batch", "batch_status", "pipeline", "progress"}
    assert callables == expected
    for name in PROPERTIES:
        assert isinstance(getattr(Client, name), property)
        assert isinstance(getattr(AsyncClient, name), property)
