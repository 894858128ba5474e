"""The example CI files (examples/ci/) validated offline against their schemas (the GitHub and
GitLab ones check-jsonschema ships, the Kubernetes ones kubernetes-validate ships), and checked
against what coldchain really offers: make targets and variables, drift-plan's keys, the CI index
variables each system sets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from coldchain.drift.shards import Shard, shard_from_environment
from conftest import ROOT

EXAMPLES = ROOT / "examples" / "ci"
GITHUB, GITLAB, KUBERNETES = (EXAMPLES / name for name in
                              ("github-actions.yml", "gitlab-ci.yml", "kubernetes-indexed-job.yaml"))


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", f"vendor.{schema}", str(path)],
                          capture_output=True, text=True, timeout=120)


def make_targets_and_variables() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", text, re.M))
    known = re.search(r"^KNOWN_VARS := (.*?)\n(?!\t)", text, re.M | re.S).group(1)
    return targets, set(known.replace("\\", " ").split())


def make_calls(text: str) -> list[tuple[str, dict[str, str]]]:
    calls = []
    for match in re.finditer(r"\bmake ([a-z][a-z-]*)((?: [A-Z_]+=\S+)*)", text):
        variables = dict(item.split("=", 1) for item in match.group(2).split())
        calls.append((match.group(1), variables))
    return calls


@pytest.mark.parametrize("path", [GITHUB, GITLAB, KUBERNETES])
def test_every_make_call_is_a_real_target_with_known_variables(path):
    targets, variables = make_targets_and_variables()
    calls = make_calls(path.read_text())
    assert calls, f"{path.name} runs no make target"
    for target, given in calls:
        assert target in targets, f"{path.name}: make {target} is no target"
        assert set(given) <= variables, f"{path.name}: make {target} {given}: unknown variables"


@pytest.mark.parametrize("schema, path", [("github-workflows", GITHUB), ("gitlab-ci", GITLAB)])
def test_ci_files_match_their_schemas(schema, path):
    result = schema_check(schema, path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("schema, path, breakage", [
    ("github-workflows", GITHUB, lambda doc: doc["jobs"]["merge"].pop("runs-on")),
    ("github-workflows", GITHUB, lambda doc: doc["jobs"]["drift-test"]["strategy"].update({"fail-fast": "sometimes"})),
    ("gitlab-ci", GITLAB, lambda doc: doc["drift-test"].update({"parallel": "three"})),
    ("gitlab-ci", GITLAB, lambda doc: doc["merge"].update({"when": "eventually"})),
])
def test_the_schemas_catch_a_broken_file(tmp_path, schema, path, breakage):
    document = yaml.safe_load(path.read_text())
    breakage(document)
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(document))
    assert schema_check(schema, broken).returncode != 0


def kubernetes_documents() -> list[dict]:
    return list(yaml.safe_load_all(KUBERNETES.read_text()))


def test_kubernetes_manifests_match_their_schema():
    for document in kubernetes_documents():
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    document = kubernetes_documents()[0]
    document["spec"]["completions"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    document = kubernetes_documents()[0]
    document["spec"]["template"]["spec"]["containers"][0]["shardz"] = 3  # strict: no unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_the_indexed_job_gives_every_pod_its_own_shard():
    job = kubernetes_documents()[0]["spec"]
    assert job["completionMode"] == "Indexed"
    total = job["completions"]
    env = {item["name"]: item["value"] for item in job["template"]["spec"]["containers"][0]["env"]}
    assert job["parallelism"] == total == int(env["COLDCHAIN_SHARDS"])
    shards = [shard_from_environment({"JOB_COMPLETION_INDEX": str(index), **env}) for index in range(total)]
    assert shards == [Shard(index, total) for index in range(1, total + 1)]


def test_gitlab_parallel_jobs_are_the_shards():
    document = yaml.safe_load(GITLAB.read_text())
    total = document["drift-test"]["parallel"]
    shards = [shard_from_environment({"CI_NODE_INDEX": str(index), "CI_NODE_TOTAL": str(total)})
              for index in range(1, total + 1)]
    assert shards == [Shard(index, total) for index in range(1, total + 1)]
    assert "drift-test" in document["merge"]["needs"] and document["merge"]["when"] == "always"


def test_github_matrix_reads_only_what_drift_plan_prints(project):
    workflow = yaml.safe_load(GITHUB.read_text())
    total = int(workflow["env"]["SHARDS"])
    result = subprocess.run([sys.executable, "-m", "coldchain", "drift-plan", "-q", "--shards", str(total)],
                            capture_output=True, text=True, cwd=project.root, timeout=120)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert len(plan["include"]) == total
    text = GITHUB.read_text()
    expressions = " ".join(re.findall(r"\$\{\{.*?\}\}", text))
    used = set(re.findall(r"\bmatrix\.([a-z_]+)", expressions))
    assert used and all(used <= set(item) for item in plan["include"]), used
    # The plan job prints one line a job output can hold; the shard jobs upload what the merge reads.
    assert "drift-plan" in str(workflow["jobs"]["plan"]) and "\n" not in result.stdout.strip()
    assert workflow["jobs"]["drift-test"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert workflow["jobs"]["merge"]["needs"] == ["drift-test"]
