"""Sharding the drift matrix and merging the shards' reports, without a daemon."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from coldchain.contract import Exit
from coldchain.environments.matrix import CaseSpec, Settings, load_matrix
from coldchain.drift.merge import merge
from coldchain.drift.report import report_names, write_reports
from coldchain.drift.assembly import summarise
from coldchain.fsutil import file_sha256
from coldchain.drift.shards import (Shard, assign, images_needed, measured_costs, parse_shard, plan,
                                    shard_from_environment)
from coldchain.errors import UsageError

from test_drift import GOLDEN, ROOT_MATRIX, _report, _result


@pytest.fixture(scope="module")
def matrix():
    return load_matrix(ROOT_MATRIX)


def where(split: dict[int, list[CaseSpec]]) -> dict[str, int]:
    return {case.name: index for index, cases in split.items() for case in cases}


def test_parse_shard_takes_i_of_n_and_names_the_mistake():
    assert parse_shard("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    assert Shard(2, 3).suffix == "shard-2-of-3"
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", ""):
        with pytest.raises(UsageError) as error:
            parse_shard(bad)
        assert "--shard" in error.value.message


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"COLDCHAIN_SHARD": "2/4"}, Shard(2, 4)),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, Shard(1, 3)),  # GitLab counts from 1
    ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "3"}, Shard(3, 3)),
    ({"JOB_COMPLETION_INDEX": "0", "COLDCHAIN_SHARDS": "3"}, Shard(1, 3)),  # Kubernetes counts from 0
    ({"JOB_COMPLETION_INDEX": "2", "COLDCHAIN_SHARDS": "3"}, Shard(3, 3)),
    # The explicit variable wins over a CI's own.
    ({"COLDCHAIN_SHARD": "1/2", "CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}, Shard(1, 2)),
])
def test_ci_index_variables(environ, expected):
    assert shard_from_environment(environ) == expected


@pytest.mark.parametrize("environ, named", [
    ({"JOB_COMPLETION_INDEX": "1"}, "COLDCHAIN_SHARDS"),  # an Indexed Job gives no total
    ({"JOB_COMPLETION_INDEX": "3", "COLDCHAIN_SHARDS": "3"}, "JOB_COMPLETION_INDEX"),  # 0-based: 3 is a 4th
    ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"}, "CI_NODE_INDEX"),  # GitLab never sets 0
    ({"CI_NODE_TOTAL": "2"}, "CI_NODE_INDEX"),
])
def test_ci_index_variables_refused_by_name(environ, named):
    with pytest.raises(UsageError) as error:
        shard_from_environment(environ)
    assert named in error.value.message + error.value.fix


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 30])
def test_every_case_runs_in_exactly_one_shard(matrix, total):
    split = assign(matrix, total)
    assert sorted(where(split)) == sorted(case.name for case in matrix.cases)
    assert sum(len(cases) for cases in split.values()) == len(matrix.cases)
    assert set(split) == set(range(1, total + 1))
    for cases in split.values():  # each shard keeps the matrix's order
        order = [case.name for case in matrix.cases]
        assert [case.name for case in cases] == sorted((case.name for case in cases), key=order.index)


def test_cases_sharing_a_container_share_a_shard(matrix):
    shard = where(assign(matrix, 3))
    by_container: dict[tuple, set[int]] = {}
    for case in matrix.cases:
        by_container.setdefault(case.container_key, set()).add(shard[case.name])
    assert all(len(shards) == 1 for shards in by_container.values())
    # A case that loads an op library runs alone, so it may go elsewhere than its environment's others.
    assert any(case.settings.load_op_libraries for case in matrix.cases)


@pytest.mark.parametrize("total", [2, 3])
def test_shards_are_balanced_by_cost(matrix, total):
    split = plan(matrix, total)
    assert split["balance"] <= 1.3, split


def test_measured_costs_move_the_split(matrix, tmp_path):
    # A report saying the tf2.7 cases took minutes each: they end up with fewer companions.
    report = {"cases": [{"name": case.name, "timing": {"container_s": 300.0 if case.env == "tf2.7-py3.9" else 3.0,
                                                       "cases_in_container": 1}} for case in matrix.cases]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    costs = measured_costs(tmp_path / "r.json")
    split = assign(matrix, 2, costs)
    heavy = {where(split)[case.name] for case in matrix.cases if case.env == "tf2.7-py3.9"}
    assert len(heavy) == 1
    (index,) = heavy
    others = [case for case in split[index] if case.env != "tf2.7-py3.9"]
    assert len(others) < len(matrix.cases) / 2 - 2
    assert assign(matrix, 2) != split
    with pytest.raises(UsageError):
        measured_costs(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError):
        measured_costs(tmp_path / "bad.json")


@pytest.mark.parametrize("total", [2, 3, 4])
def test_the_split_does_not_depend_on_positions_in_the_file(matrix, total):
    reversed_matrix = dataclasses.replace(matrix, cases=tuple(reversed(matrix.cases)))
    assert where(assign(reversed_matrix, total)) == where(assign(matrix, total))


@pytest.mark.parametrize("env, settings", [
    ("infer-cpu", Settings()),  # joins an existing container group
    ("tf2.17-py3.11", Settings(environment=(("TF_ENABLE_ONEDNN_OPTS", "0"),))),  # a new container group
])
@pytest.mark.parametrize("total", [2, 3])
def test_adding_a_case_moves_at_most_one_other_container(matrix, env, settings, total):
    """Rendezvous hashing keeps every group on its shard; the load bound (SLACK) may push one group
    that no longer fits to its next-best shard, never reshuffle the split."""
    from coldchain.drift.probe import group_cases

    added = CaseSpec(name="added", env=env, variant="default", expect="pass", settings=settings)
    before = where(assign(matrix, total))
    group_of = {case.name: case.container_key for case in matrix.cases}
    for cases in ((added,) + matrix.cases, matrix.cases + (added,)):  # at the top or the bottom of the file
        after = where(assign(dataclasses.replace(matrix, cases=cases), total))
        moved = {group_of[name] for name, shard in after.items() if name != "added" and before[name] != shard}
        assert len(moved) <= 1, moved
        assert len(group_cases(cases)) >= len(group_cases(matrix.cases))


def test_a_shard_builds_only_the_images_its_cases_need(matrix):
    tf27 = [case for case in matrix.cases if case.name == "tf2.7-py3.9"]
    assert images_needed(matrix, tf27) == ["env:tf2.7-py3.9"]
    stripped = [case for case in matrix.cases if case.name == "top-k-stripped-into-tf2.7"]
    # A re-export of a freeze variant: the training image freezes, the re-export environment re-exports.
    assert images_needed(matrix, stripped) == ["env:tf2.7-py3.9", "train-cpu"]
    split = plan(matrix, 3)
    assert [item["shard"] for item in split["include"]] == ["1/3", "2/3", "3/3"]
    assert sorted(name for item in split["include"] for name in item["cases"]) == \
        sorted(case.name for case in matrix.cases)


def test_freeze_variants_need_the_training_image_and_the_op_build_image_made_from_it(matrix):
    from coldchain.environments.matrix import OP_BUILD_ENV, freeze_images

    assert freeze_images("train") == ("train-cpu",)
    assert freeze_images(OP_BUILD_ENV) == ("train-cpu", "opbuild")
    custom = [case for case in matrix.cases if matrix.variants[case.variant].freeze_in == OP_BUILD_ENV]
    assert custom and {"train-cpu", "opbuild"} <= set(images_needed(matrix, custom))


# ---- merge ---------------------------------------------------------------------------------------

def whole_report(matrix) -> dict:
    """What an unsharded run writes (the runner's keys), some cases unexpected."""
    results = [_result(matrix, case.name, "bit-exact" if case.name != "tf2.17" else "unregistered-op",
                       {"loaded": True, "outcome": "bit-exact", "golden": GOLDEN}) for case in matrix.cases]
    report = _report(results)
    report.update(matrix_sha256=file_sha256(ROOT_MATRIX), matrix_cases=[case.name for case in matrix.cases],
                  variants={"default": "out/model"})
    return report


def partials(matrix, report: dict, total: int, out: Path) -> list[Path]:
    """Split a whole report the way the shards would have written it."""
    paths = []
    for index, cases in assign(matrix, total).items():
        names = [case.name for case in cases]
        part = copy.deepcopy(report)
        part["cases"] = [case for case in report["cases"] if case["name"] in names]
        part.update(summarise(part["cases"]), shard={"index": index, "total": total, "cases": names},
                    timing={**report["timing"], "total_s": float(index)})
        paths.append(write_reports(part, out, Shard(index, total).suffix)["json"])
    return paths


def without_timing(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("timing", "generated")}


@pytest.mark.parametrize("total", [1, 2, 3])
def test_merge_gives_the_unsharded_report(matrix, tmp_path, total):
    whole = whole_report(matrix)
    paths = partials(matrix, whole, total, tmp_path)
    merged = merge([tmp_path])  # a directory stands for its partial reports
    assert without_timing(merged) == without_timing(json.loads(json.dumps(whole)))
    assert merged["timing"]["total_s"] == float(total)  # side by side: the slowest shard's time
    assert [item["shard"] for item in merged["timing"]["shards"]] == [f"{i}/{total}" for i in range(1, total + 1)]
    assert not merged["ok"] and merged["counts"]["unexpected"] == whole["counts"]["unexpected"] > 0
    assert merge(list(reversed(paths)))["cases"] == merged["cases"]


def refused(paths, *words):
    with pytest.raises(UsageError) as error:
        merge(paths)
    text = error.value.message + " " + error.value.fix
    for word in words:
        assert str(word) in text, text
    return error.value


def test_merge_refusals_name_the_file(matrix, tmp_path):
    whole = whole_report(matrix)
    paths = partials(matrix, whole, 3, tmp_path / "a")
    one, two, three = paths

    refused([one, two], "3/3", "missing")
    refused([one, two, three, three], str(three), "again")

    def edited(path: Path, folder: str, change, as_text: bool = False) -> Path:
        """A copy of a partial report, under its own name in another folder, changed."""
        copy_path = tmp_path / folder / path.name
        copy_path.parent.mkdir()
        text = path.read_text()
        copy_path.write_text(change(text) if as_text else json.dumps(change(json.loads(text))))
        return copy_path

    truncated = edited(one, "t", lambda text: text[:-200], as_text=True)
    refused([truncated, two, three], str(truncated), "truncated")
    short = edited(two, "s", lambda data: {**data, "cases": data["cases"][:-1]})  # whole JSON, a case lost
    refused([one, short, three], str(short), "truncated or edited")
    other_model = edited(two, "m", lambda data: {**data, "model_sha256": "cd" * 32})
    refused([one, other_model, three], str(other_model), "model")
    other_matrix = edited(three, "x", lambda data: {**data, "matrix_sha256": "00" * 32})
    refused([one, two, other_matrix], str(other_matrix), "matrix")

    # Shards split differently (another --costs): a case twice, and one in no shard.
    moved = json.loads(three.read_text())["cases"][0]

    def gain(data):
        data["cases"].append(moved)
        data["shard"]["cases"].append(moved["name"])
        data["counts"]["cases"] += 1
        return data

    def lose(data):
        data["cases"], data["shard"]["cases"] = data["cases"][1:], data["shard"]["cases"][1:]
        data["counts"]["cases"] -= 1
        return data

    twice = edited(two, "d", gain)
    refused([one, twice, three], moved["name"], "also in")
    lost = edited(three, "l", lose)
    refused([one, two, lost], moved["name"], "in no partial report")

    other_total = partials(matrix, whole, 2, tmp_path / "b")[0]
    refused([one, two, three, other_total], str(other_total), "one of 3")

    unsharded = write_reports(whole, tmp_path / "w")["json"]
    refused([unsharded], str(unsharded), "not a shard's")
    refused([tmp_path / "nowhere"], "nowhere")
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty"], "empty", "no partial reports")


def test_partial_report_names_carry_the_index():
    assert report_names(Shard(2, 3).suffix) == {"json": "drift-report.shard-2-of-3.json",
                                                "markdown": "drift-report.shard-2-of-3.md",
                                                "junit": "drift-junit.shard-2-of-3.xml"}


def coldchain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coldchain", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_drift_merge_command_writes_every_report_and_exits_by_the_verdict(matrix, tmp_path, project):
    whole = whole_report(matrix)
    partials(matrix, whole, 2, tmp_path / "parts")
    result = coldchain("drift-merge", str(tmp_path / "parts"), "--out", str(tmp_path / "merged"), "--no-heatmap",
                       cwd=project.root)
    assert result.returncode == Exit.UNEXPECTED, result.stderr
    assert "2 shards merged" in result.stdout and f"{whole['counts']['unexpected']} UNEXPECTED" in result.stdout
    written = sorted(path.name for path in (tmp_path / "merged").iterdir())
    assert written == sorted(report_names().values())
    assert "Traceback" not in result.stderr

    (tmp_path / "parts" / "drift-report.shard-2-of-2.json").write_text('{"cases": [')
    result = coldchain("drift-merge", str(tmp_path / "parts"), "--out", str(tmp_path / "again"), "--no-heatmap",
                       cwd=project.root)
    assert result.returncode == Exit.USAGE and "drift-report.shard-2-of-2.json" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "again").exists()


def test_drift_plan_prints_one_line_a_job_matrix_reads(project):
    result = coldchain("drift-plan", "--shards", "3", cwd=project.root)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    split = json.loads(line)
    assert [item["shard"] for item in split["include"]] == ["1/3", "2/3", "3/3"]
    assert all(item["images"] and item["environments"] for item in split["include"])
