"""Domain model shared by the scheduler and the providers: a job's spec and the states a job moves through."""

from __future__ import annotations

import re
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes object names are DNS-1123 labels of at most 63 characters; Spillover appends a short
# suffix to build the Job name, so job names keep room for it.
MAX_JOB_NAME = 48


class JobSpec(BaseModel):
    """What a user asks to run. Resources are per replica; a gang job has `nodes` replicas, one per node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_JOB_NAME)
    queue: str = Field(min_length=1)
    image: str = Field(min_length=1)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    gpus: int = Field(ge=1, le=64, description="GPUs per replica (per node)")
    gpu_types: list[str] = Field(default_factory=list, description="allowed GPU types; empty means any")
    cpu: float = Field(default=1.0, gt=0, le=1024, description="CPU cores per replica")
    memory_gib: float = Field(default=4.0, gt=0, le=65536, description="memory per replica in GiB")
    nodes: int = Field(default=1, ge=1, le=1024, description="replicas; more than 1 makes a gang of whole nodes")
    estimated_runtime_s: float = Field(gt=0, le=366 * 86400)
    priority: int = Field(default=0, ge=-1000, le=1000)
    checkpointable: bool = False

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError("must be lower-case letters, digits and '-', starting and ending with a letter or digit")
        return v

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.nodes


class JobState(str, Enum):
    """Where a job is in its life. Terminal states never change again."""

    PENDING = "pending"  # in the global queue, no placement yet
    DISPATCHING = "dispatching"  # a dispatch to a cluster is intended (written) but not confirmed
    DISPATCHED = "dispatched"  # the cluster accepted it; waiting for capacity there (e.g. a node provisioning)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"  # a cancel is intended; the cluster has not confirmed the Job is gone
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @property
    def active(self) -> bool:
        """Bound to a cluster: the cluster may be running it."""
        return self in (JobState.DISPATCHING, JobState.DISPATCHED, JobState.RUNNING, JobState.CANCELLING)


class ClusterKind(str, Enum):
    ONPREM = "onprem"
    CLOUD = "cloud"


class Cloud(str, Enum):
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
