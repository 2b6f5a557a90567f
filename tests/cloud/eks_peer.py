"""EKS for tests: moto in server mode on 127.0.0.1 behind a fault-injecting proxy, with a cluster and managed
node groups created through boto3, and health issues a test can raise as EKS would after failed launches."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from .fault_proxy import FaultProxy

ACCOUNT = "123456789012"
REGION = "us-east-1"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
INSUFFICIENT_CAPACITY = (
    "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do not have sufficient "
    "{itype} capacity in the Availability Zone you requested (us-east-1a). Our system will be working on "
    "provisioning additional capacity. Launching EC2 instance failed.")


class EKSPeer:
    """moto's EKS on a free port; `url` is the fault proxy in front of it."""

    def __init__(self) -> None:
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self.moto_port = self._moto.get_host_and_port()[1]
        self.proxy = FaultProxy(self.moto_port)
        self.url = self.proxy.url
        self.cluster_name = f"burst-{uuid.uuid4().hex[:6]}"
        self._admin = boto3.client("eks", region_name=REGION, endpoint_url=f"http://127.0.0.1:{self.moto_port}",
                                   aws_access_key_id="testing", aws_secret_access_key="testing",
                                   config=Config(retries={"max_attempts": 1}))
        self._admin.create_cluster(name=self.cluster_name, roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
                                   resourcesVpcConfig={"subnetIds": ["subnet-1"]})

    def add_nodegroup(self, name: str, *, instance_type: str = "p4d.24xlarge", min_size: int = 0,
                      max_size: int = 4, desired: int = 0, spot: bool = False) -> None:
        self._admin.create_nodegroup(
            clusterName=self.cluster_name, nodegroupName=name, nodeRole=f"arn:aws:iam::{ACCOUNT}:role/node",
            subnets=["subnet-1"], instanceTypes=[instance_type], capacityType="SPOT" if spot else "ON_DEMAND",
            scalingConfig={"minSize": min_size, "maxSize": max_size, "desiredSize": desired})

    def _nodegroup(self, name: str) -> Any:
        from moto.eks.models import eks_backends

        return eks_backends[ACCOUNT][REGION].clusters[self.cluster_name].nodegroups[name]

    def size(self, name: str) -> int:
        """The desired size EKS holds for the node group (what its Auto Scaling group converges to)."""
        return int(self._nodegroup(name).scaling_config["desiredSize"])

    def launch_failures(self, name: str, on: bool = True, code: str = "AsgInstanceLaunchFailures",
                        message: str | None = None) -> None:
        """Raise (or clear) the health issue EKS shows when the Auto Scaling group cannot launch instances."""
        ng = self._nodegroup(name)
        text = message or INSUFFICIENT_CAPACITY.format(itype=ng.instance_types[0])
        ng.health = {"issues": [{"code": code, "message": text, "resourceIds": [f"eks-{ng.uuid}"]}] if on else []}

    def failing(self, name: str) -> bool:
        return bool(self._nodegroup(name).health.get("issues"))

    def close(self) -> None:
        self.proxy.close()
        self._moto.stop()
