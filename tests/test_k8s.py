"""The Kubernetes manifests in k8s/, validated offline with the kubernetes client's models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from somocloud.config import config_from_dict

K8S = Path(__file__).resolve().parents[1] / "k8s"


def _manifests() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(K8S.glob("*.yaml"))}


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_spec.get("containers", [])) + list(pod_spec.get("initContainers", []))


def test_core_resources_validate_and_typos_are_caught() -> None:
    from kubernetes import client

    models = {"ConfigMap": client.V1ConfigMap, "Job": client.V1Job}
    seen = set()
    for doc in _manifests().values():
        if doc["kind"] in models:
            models[doc["kind"]].model_validate(doc)
            seen.add(doc["kind"])
    assert seen == {"ConfigMap", "Job"}
    job = _manifests()["publish-job.yaml"]
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")  # the check would catch a typo
    with pytest.raises(ValueError):
        client.V1Job.model_validate(job)


def test_the_run_config_in_the_configmap_is_valid() -> None:
    data = yaml.safe_load(_manifests()["configmap-run-config.yaml"]["data"]["run.yaml"])
    cfg = config_from_dict(data)
    assert cfg.predict.gpu and cfg.store("product").startswith("s3://")
    assert "endpoint" not in str(data).lower() and "secret" not in str(data).lower()


def test_daskjob_pods_validate_and_gpus_are_on_the_workers_only() -> None:
    from kubernetes import client

    doc = _manifests()["predict-daskjob.yaml"]
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == "DaskJob"
    runner = doc["spec"]["job"]["spec"]
    worker = doc["spec"]["cluster"]["spec"]["worker"]["spec"]
    scheduler = doc["spec"]["cluster"]["spec"]["scheduler"]["spec"]
    for pod in (runner, worker, scheduler):
        client.V1PodSpec.model_validate(pod)

    def gpus(pod: dict[str, Any]) -> list[str]:
        return [
            c["resources"].get("limits", {}).get("nvidia.com/gpu")
            for c in _containers(pod)
            if "resources" in c
        ]

    assert gpus(worker) == ["1"]
    assert not any(gpus(runner)) and not any(gpus(scheduler))
    assert "--resources" in worker["containers"][0]["args"] and "GPU=1" in worker["containers"][0]["args"]
    args = runner["containers"][0]["args"]
    assert args[:3] == ["predict", "-c", "/config/run.yaml"] and "$(DASK_SCHEDULER_ADDRESS)" in args


def test_credentials_only_by_reference() -> None:
    for name, doc in _manifests().items():
        text = yaml.safe_dump(doc)
        assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret" not in text.lower(), name
        pods = []
        if doc["kind"] == "Job":
            pods = [doc["spec"]["template"]["spec"]]
        elif doc["kind"] == "DaskJob":
            spec = doc["spec"]
            pods = [spec["job"]["spec"], spec["cluster"]["spec"]["worker"]["spec"]]
        for pod in pods:
            for container in _containers(pod):
                assert {"secretRef": {"name": "somocloud-s3"}} in container.get("envFrom", []), (
                    name,
                    container["name"],
                )
                assert not container.get("env"), "no literal environment values"


def test_indexed_job_runs_every_part_once_with_gpus() -> None:
    import subprocess

    from kubernetes import client

    from somocloud.cli import build_parser

    doc = _manifests()["predict-indexed-job.yaml"]
    job = client.V1Job.model_validate(doc)
    spec = job.spec
    assert spec.completion_mode == "Indexed" and spec.parallelism <= spec.completions
    pod = spec.template.spec
    assert pod.restart_policy == "Never" and spec.backoff_limit_per_index  # per-index retries need Never
    (container,) = pod.containers
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    # The pod's shell line, run for every index with a stand-in `somocloud` that prints its arguments.
    parts = []
    for index in range(spec.completions):
        line = f'somocloud() {{ printf "%s\\n" "$@"; }}; {container.args[0]}'
        out = subprocess.run([*container.command, line], env={"JOB_COMPLETION_INDEX": str(index)},
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        args, extra = build_parser().parse_known_args(out.splitlines())
        assert args.verb == "predict" and args.config == "/config/run.yaml" and not extra
        parts.append(args.parts)
    n = spec.completions
    assert parts == [(i, n) for i in range(1, n + 1)], "each share once, and N matches completions"
