"""`make run`'s lanes (pipelines/repro.py), against a stand-in for the dvc command that
records its calls; the real DVC run side by side is in test_e2e.py."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import yaml

from pipelines import repro, runtime
from tests.conftest import TINY_STUDY, tiny_params

FAKE_DVC = textwrap.dedent("""
    import json, os, sys, time
    args = [a for a in sys.argv[1:] if a != "--wait-for-lock"]
    with open(os.environ["FAKE_DVC_CALLS"], "a") as calls:
        calls.write(json.dumps(args) + "\\n")
    if args[0] == "status":
        print(json.dumps({name: [] for name in os.environ["FAKE_DVC_STALE"].split(",")}))
    elif args[:2] == ["repro", "--single-item"]:
        start = time.monotonic()
        for stage in args[2:]:
            print(f"Running stage '{stage}':")
            if stage in os.environ["FAKE_DVC_FAIL"].split(","):
                print("ERROR: failed to reproduce", stage)
                sys.exit(255)
        time.sleep(1.5 if args[2] in os.environ.get("FAKE_DVC_SLOW", "").split(",") else 0.2)
        with open(os.environ["FAKE_DVC_CALLS"] + ".times", "a") as times:
            times.write(json.dumps([args[2], start, time.monotonic()]) + "\\n")
""")


@pytest.fixture
def fake_dvc(tmp_path, monkeypatch):
    script = tmp_path / "fake_dvc.py"
    script.write_text(FAKE_DVC)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**tiny_params(), "study": TINY_STUDY}))
    monkeypatch.setattr(repro, "DVC", [sys.executable, str(script)])
    monkeypatch.setattr(repro, "_write_dag", lambda root: None)   # test_dag.py covers the generator
    monkeypatch.setenv("FAKE_DVC_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_DVC_FAIL", "")

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return tmp_path, calls


def test_lanes_are_the_study_the_datasets_then_each_experiment_in_params_order():
    from pipelines import config

    names = [(lane.name, lane.stages, lane.needs)
             for lane in repro.lanes(config.validate({**tiny_params(), "study": TINY_STUDY}))]
    assert names == [("study", ("check_study", "study_data", "study"), ()),
                     ("prepare@digits", ("prepare@digits",), ()),
                     ("mlp", ("check@mlp", "train@mlp", "evaluate@mlp", "export@mlp"), ("prepare@digits",)),
                     ("cnn", ("check@cnn", "train@cnn", "evaluate@cnn", "export@cnn"), ("prepare@digits",))]


def test_only_lanes_with_a_changed_stage_run_then_the_rest_of_the_pipeline(fake_dvc, monkeypatch):
    root, calls = fake_dvc
    monkeypatch.setenv("FAKE_DVC_STALE", "prepare@digits,train@cnn,study,report")
    repro.run(jobs=2, root=root)
    made = calls()
    assert made[0] == ["status", "--json"] and made[-1] == ["repro"]
    lanes = [tuple(call[2:]) for call in made[1:-1]]
    assert sorted(lanes) == [("check@cnn", "train@cnn", "evaluate@cnn", "export@cnn"),
                             ("check_study", "study_data", "study"), ("prepare@digits",)]
    # the dataset and the study side by side; cnn, which reads the dataset, after it
    assert set(lanes[:2]) == {("prepare@digits",), ("check_study", "study_data", "study")}
    assert repro.ran(root / "outputs" / "logs" / "check@cnn.log") == ["check@cnn", "train@cnn", "evaluate@cnn",
                                                                       "export@cnn"]


def test_a_lane_waits_for_its_dataset_and_an_up_to_date_dataset_holds_nothing_back(fake_dvc, monkeypatch):
    root, _ = fake_dvc
    monkeypatch.setenv("FAKE_DVC_SLOW", "prepare@digits,check@mlp,check@cnn")

    def spans() -> dict[str, tuple[float, float]]:
        path = root / "calls.jsonl.times"
        found = {stage: (start, end) for stage, start, end in map(json.loads, path.read_text().splitlines())}
        path.unlink()
        return found

    monkeypatch.setenv("FAKE_DVC_STALE", "prepare@digits,train@mlp,train@cnn")
    repro.run(jobs=2, root=root)
    ran = spans()
    # two slots, but mlp and cnn read digits: both start after its stage has ended
    assert ran["prepare@digits"][1] <= min(ran["check@mlp"][0], ran["check@cnn"][0])
    assert ran["check@mlp"][0] < ran["check@cnn"][1] and ran["check@cnn"][0] < ran["check@mlp"][1]
    # digits up to date: the two experiments start at once
    monkeypatch.setenv("FAKE_DVC_STALE", "train@mlp,train@cnn")
    repro.run(jobs=2, root=root)
    ran = spans()
    assert set(ran) == {"check@mlp", "check@cnn"}
    assert abs(ran["check@mlp"][0] - ran["check@cnn"][0]) < 1.0


def test_a_failed_lane_stops_the_run_with_its_name(fake_dvc, monkeypatch, capsys):
    root, calls = fake_dvc
    monkeypatch.setenv("FAKE_DVC_STALE", "study,train@mlp,train@cnn")
    monkeypatch.setenv("FAKE_DVC_FAIL", "train@cnn")
    with pytest.raises(runtime.StageError, match="lane cnn failed"):
        repro.run(jobs=1, root=root)
    # one lane at a time in params order (cnn, mlp): the study, then cnn fails; no lane after
    # it (mlp) and no final repro
    assert [call[2:] for call in calls()[1:]] == [["check_study", "study_data", "study"],
                                                  ["check@cnn", "train@cnn", "evaluate@cnn", "export@cnn"]]
    assert "ERROR: failed to reproduce train@cnn" in capsys.readouterr().err


def test_jobs_zero_is_a_plain_dvc_repro(fake_dvc, monkeypatch):
    root, calls = fake_dvc
    monkeypatch.setenv("FAKE_DVC_STALE", "train@mlp")
    repro.run(jobs=0, root=root)
    assert calls() == [["repro", "prepare@digits"], ["repro"]]


def test_bad_params_fail_before_any_stage(fake_dvc, capsys):
    root, calls = fake_dvc
    (root / "params.yaml").write_text("datasets: [digits]\nexperiments: {}\n")
    with pytest.raises(SystemExit) as exit_:
        runtime.run_stage(lambda: repro.run(jobs=2, root=root))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("error: ") and not (root / "calls.jsonl").exists()
