"""A local Kubernetes API server and cluster for tests that go through the official client over a real socket."""

from .apiserver import ApiError, FakeKube

__all__ = ["ApiError", "FakeKube"]
