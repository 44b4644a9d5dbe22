"""The `keiko` console script end to end, run as a subprocess against the embedded
deployment with authentication on (a real API and worker): the walk (upload, train
--follow, predict from a CSV, compare, export), an image model predicted from PNG files, the
exit codes of a failed and a cancelled job, the API's errors as one line, and the config
file with its precedence."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from tests.e2e.cli_helpers import KEIKO, cli_env, keiko_json, run_keiko, stack_key
from tests.e2e.helpers import csv_bytes, diabetes_frame, iris_frame, start_long_job, wait_until
from tests.e2e.test_images import digits, idx_images, idx_labels, png
from tests.stack import ROOT, Stack, free_port

IRIS_SPEC = """\
# an MLP classifying iris species
task: classification
target: species
model: {kind: mlp, hidden_layers: [16]}
optimizer: {name: adam, lr: 0.01}
training: {epochs: 4, batch_size: 16, seed: 0, test_split: 0.2}
"""


def iris_spec() -> dict[str, Any]:
    return dict(yaml.safe_load(IRIS_SPEC))


def started_job(stderr: str) -> str:
    """The id `train` announces on stderr."""
    found = re.search(r"^job ([0-9a-f]{32}) queued$", stderr, re.MULTILINE)
    assert found, stderr
    return found.group(1)


def epoch_lines(stderr: str, label: str) -> list[str]:
    """`epoch 1/4`, ... from the lines `--follow` prints when stdout is not a terminal."""
    return re.findall(rf"^job {label} (epoch \d+/\d+) ", stderr, re.MULTILINE)


def test_upload_train_follow_predict_compare_export(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    env = cli_env(stack, tmp_path / "config")
    frame = iris_frame()
    (tmp_path / "iris.csv").write_bytes(csv_bytes(frame))
    rows = frame.drop(columns=["species"]).iloc[[0, 60, 120]]
    (tmp_path / "rows.csv").write_bytes(csv_bytes(rows))
    (tmp_path / "spec.yaml").write_text(IRIS_SPEC)

    dataset = keiko_json(env, "datasets", "upload", str(tmp_path / "iris.csv"), "--name", "iris")
    assert dataset["name"] == "iris" and dataset["num_rows"] == 150
    listed = keiko_json(env, "datasets", "list", "--limit", "500")
    assert dataset["id"] in [d["id"] for d in listed["items"]]

    followed = run_keiko(env, "train", str(tmp_path / "spec.yaml"), "--dataset", dataset["id"],
                         "--follow")  # fmt: skip
    assert followed.returncode == 0, followed.stderr
    job_id = started_job(followed.stderr)
    job = stack.http().get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["spec"]["dataset_id"] == dataset["id"]
    # Not a terminal: a line per epoch, then the final metrics as a table on stdout.
    assert epoch_lines(followed.stderr, job_id[:8]) == [f"epoch {i}/4" for i in range(1, 5)]
    assert f"job {job_id} succeeded: model {job['model_id']}" in followed.stderr
    assert "final metrics" in followed.stdout
    test_accuracy = job["metrics"]["test"]["accuracy"]
    assert re.search(rf"accuracy .*{test_accuracy:.4g}", followed.stdout), followed.stdout

    # Predict from a CSV: the answer POST /predict gives for the same rows.
    model_id = job["model_id"]
    predicted = keiko_json(env, "predict", model_id, "--input", str(tmp_path / "rows.csv"))
    direct = stack.http().post(
        "/predict", json={"model_id": model_id, "inputs": rows.to_dict("records")}
    )
    assert predicted["predictions"] == direct.json()["predictions"]
    assert np.allclose(predicted["probabilities"], direct.json()["probabilities"])
    one = keiko_json(env, "predict", model_id, "--inputs", json.dumps(rows.iloc[0].to_dict()))
    assert one["predictions"] == predicted["predictions"][:1]
    table = run_keiko(env, "predict", model_id, "--input", str(tmp_path / "rows.csv"))
    assert table.returncode == 0 and "rows.csv:3" in table.stdout

    # A second job from a JSON spec and a file to upload, then the two compared.
    spec = iris_spec()
    spec["training"]["epochs"] = 2
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    second = keiko_json(env, "train", str(tmp_path / "spec.json"), "--dataset",
                        str(tmp_path / "iris.csv"))  # fmt: skip
    assert second["status"] == "queued" and second["spec"]["dataset_id"] != dataset["id"]
    other = stack.wait_for_job(second["id"])
    compared = keiko_json(env, "jobs", "compare", job_id, other["id"])
    assert compared["jobs"] == [job_id, other["id"]]
    assert compared["metrics"]["test/accuracy"] == [
        test_accuracy,
        other["metrics"]["test"]["accuracy"],
    ]
    differences = compared["spec_differences"]
    assert differences["training.epochs"] == [4, 2]
    assert differences["dataset_id"] == [dataset["id"], other["spec"]["dataset_id"]]
    assert set(differences) == {"training.epochs", "dataset_id"}
    shown = run_keiko(env, "jobs", "compare", job_id, other["id"])
    assert "spec differences" in shown.stdout and "training.epochs" in shown.stdout

    # Export: the ONNX file answers as POST /predict did.
    exported = keiko_json(env, "models", "export", model_id, "--output", str(tmp_path))
    path = Path(exported["path"])
    assert path == tmp_path / f"keiko-mlp-{model_id}.onnx" and path.stat().st_size > 0
    meta = {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}
    assert meta["model_id"] == model_id
    session = ort.InferenceSession(str(path))
    x = rows[meta["inputs"][0]["features"]].to_numpy(np.float32)
    _, index = session.run(None, {"input": x})
    assert [meta["labels"][i] for i in index] == predicted["predictions"]

    models = keiko_json(env, "models", "list", "--limit", "500")
    assert model_id in [m["id"] for m in models["items"]]
    assert keiko_json(env, "models", "show", model_id)["job_id"] == job_id
    assert keiko_json(env, "jobs", "show", job_id)["history"] == job["history"]


def test_an_image_model_predicts_from_png_files(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    env = cli_env(stack, tmp_path / "config")
    x, y = digits()
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(x)))
    (tmp_path / "labels-idx1-ubyte").write_bytes(idx_labels(y))
    dataset = keiko_json(env, "datasets", "upload", str(tmp_path / "images-idx3-ubyte.gz"),
                         str(tmp_path / "labels-idx1-ubyte"))  # fmt: skip
    assert dataset["format"] == "idx" and dataset["shape"]["x"] == [len(y), 1, 8, 8]
    spec = {"dataset_id": dataset["id"], "task": "classification",
            "model": {"kind": "mlp", "hidden_layers": [32]},
            "training": {"epochs": 3, "batch_size": 64, "seed": 0}}  # fmt: skip
    (tmp_path / "digits.json").write_text(json.dumps(spec))
    followed = run_keiko(env, "train", str(tmp_path / "digits.json"), "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    job = json.loads(followed.stdout)  # --json: the finished job on stdout, progress on stderr
    assert job["status"] == "succeeded" and len(job["history"]) == 3

    files = []
    for i in range(4):
        files.append(tmp_path / f"digit-{i}.png")
        files[-1].write_bytes(png(x[i]))
    args = [arg for path in files for arg in ("--input", str(path))]
    predicted = keiko_json(env, "predict", job["model_id"], *args)
    arrays = stack.http().post(
        "/predict", json={"model_id": job["model_id"], "inputs": x[:4].tolist()}
    )
    assert predicted["predictions"] == arrays.json()["predictions"]
    table = run_keiko(env, "predict", job["model_id"], *args)
    assert table.returncode == 0 and "digit-3.png" in table.stdout


def test_an_estimated_distinct_count_is_shown_as_one(embedded_stack: Stack, tmp_path: Path) -> None:
    env = cli_env(embedded_stack, tmp_path / "config", COLUMNS="200")
    ids = "".join(f"u{i},{i % 2}\n" for i in range(100_050))  # past 100,000 distinct values
    (tmp_path / "users.csv").write_text(f"user,y\n{ids}")
    dataset = keiko_json(env, "datasets", "upload", str(tmp_path / "users.csv"))
    user = dataset["columns"][0]
    assert user["unique_exact"] is False
    shown = run_keiko(env, "datasets", "show", dataset["id"])
    assert shown.returncode == 0, shown.stderr
    rows = [line.split("│") for line in shown.stdout.splitlines() if "│" in line]
    cells = {row[1].strip(): row[4].strip() for row in rows if len(row) > 4}
    assert cells["user"] == f"≈ {user['unique']}" and cells["y"] == "2"


def test_exit_codes_say_how_a_followed_job_ended(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    env = cli_env(stack, tmp_path / "config")
    (tmp_path / "diabetes.csv").write_bytes(csv_bytes(diabetes_frame()))
    diverging = {"task": "regression", "target": "target",
                 "model": {"kind": "mlp", "hidden_layers": [64, 64]},
                 "optimizer": {"name": "sgd", "lr": 10},
                 "training": {"epochs": 5, "batch_size": 8}}  # fmt: skip
    (tmp_path / "diverging.json").write_text(json.dumps(diverging))
    failed = run_keiko(env, "train", str(tmp_path / "diverging.json"), "--dataset",
                       str(tmp_path / "diabetes.csv"), "--follow")  # fmt: skip
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    job_id = started_job(failed.stderr)
    assert f"job {job_id} failed: DivergedError: " in failed.stderr

    # Cancelled while `jobs watch` follows it: exit 2.
    job_id = start_long_job(stack, seed=21, epochs=40)
    watcher = subprocess.Popen(
        [KEIKO, "jobs", "watch", job_id], env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(stack, job_id, lambda j: j["progress"]["epoch"] >= 1)
        cancel = run_keiko(env, "jobs", "cancel", job_id)
        assert cancel.returncode == 0 and "cancel requested" in cancel.stderr
        stdout, stderr = watcher.communicate(timeout=120)
    finally:
        watcher.kill()
    assert watcher.returncode == 2, (stdout, stderr)
    assert f"job {job_id} cancelled" in stderr and "epoch 1/40" in stderr
    statuses = re.findall(rf"^job {job_id[:8]} (\w+)$", stderr, re.MULTILINE)
    assert statuses == ["queued", "running", "cancelling", "cancelled"]
    assert stack.http().get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    again = run_keiko(env, "jobs", "cancel", job_id)
    assert again.returncode == 3
    assert again.stderr == f"error: job {job_id!r} has already finished (cancelled) (HTTP 409)\n"


def test_errors_are_one_line_and_exit_3(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    env = cli_env(stack, tmp_path / "config")
    missing = run_keiko(env, "jobs", "show", "no-such-job")
    assert (missing.returncode, missing.stderr) == (
        3,
        "error: no job with id 'no-such-job' (HTTP 404)\n",
    )
    no_key = run_keiko({k: v for k, v in env.items() if k != "KEIKO_API_KEY"}, "jobs", "list")
    assert no_key.returncode == 3 and no_key.stderr.count("\n") == 1
    assert no_key.stderr.startswith("error: ") and "(HTTP 401)" in no_key.stderr
    dataset_id = keiko_json(
        env, "datasets", "upload", str(write(tmp_path / "iris.csv", csv_bytes(iris_frame())))
    )["id"]
    bad = iris_spec()
    bad["training"]["epochs"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    refused = run_keiko(env, "train", str(tmp_path / "bad.json"), "--dataset", dataset_id)
    assert refused.returncode == 3 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: training.epochs: ")
    assert refused.stderr.endswith("(HTTP 422)\n")
    (tmp_path / "list.yaml").write_text("- not\n- a mapping\n")
    local = run_keiko(env, "train", str(tmp_path / "list.yaml"))
    assert local.returncode == 3
    assert local.stderr == f"error: {tmp_path / 'list.yaml'}: a job spec is a mapping, not list\n"
    gone = run_keiko(env, "--url", f"http://127.0.0.1:{free_port()}", "jobs", "list")
    assert gone.returncode == 3 and gone.stderr.startswith("error: cannot reach the Keiko API")


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_the_config_file_and_its_precedence(embedded_stack: Stack, tmp_path: Path) -> None:
    stack = embedded_stack
    env = cli_env(None, tmp_path / "config")  # neither address nor key in the environment
    assert run_keiko(env, "config", "set", "url", stack.base_url).returncode == 0
    key = stack_key(stack)
    assert key is not None
    assert run_keiko(env, "config", "set", "key", key).returncode == 0
    path = tmp_path / "config" / "keiko" / "config.toml"
    assert path.stat().st_mode & 0o777 == 0o600  # it holds a key
    assert keiko_json(env, "config", "show") == {
        "url": stack.base_url,
        "key": key[:12] + "...",
        "config_file": str(path),
    }
    assert keiko_json(env, "jobs", "list")["limit"] == 50  # from the file alone
    nowhere = f"http://127.0.0.1:{free_port()}"
    beaten = run_keiko({**env, "KEIKO_URL": nowhere}, "jobs", "list")
    assert beaten.returncode == 3 and nowhere in beaten.stderr  # the environment beats the file
    flag = run_keiko({**env, "KEIKO_URL": nowhere}, "--url", stack.base_url, "jobs", "list")
    assert flag.returncode == 0, flag.stderr  # and the flag beats the environment
    assert run_keiko(env, "config", "unset", "key").returncode == 0
    assert "(HTTP 401)" in run_keiko(env, "jobs", "list").stderr


def test_help_answers_without_importing_torch() -> None:
    """The client (and PyTorch, through the API's models) loads inside commands only."""
    check = "import sys, keiko.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode == 0
    shown = subprocess.run([KEIKO, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0
    for command in ("train", "predict", "rollout", "datasets", "jobs", "models", "config"):
        assert command in shown.stdout


@pytest.mark.parametrize(
    "args",
    [["predict", "some-model"], ["jobs", "compare", "one-job"], ["train", "no-such-spec.yaml"]],
)
def test_a_command_line_that_does_not_parse_exits_2(args: list[str], tmp_path: Path) -> None:
    done = run_keiko(cli_env(None, tmp_path), *args)
    assert done.returncode == 2 and "Usage: keiko" in done.stderr


def test_a_policy_follows_by_steps_and_rolls_out(embedded_stack: Stack, tmp_path: Path) -> None:
    """Reinforcement learning: no dataset, progress in environment steps, rollouts."""
    stack = embedded_stack
    env = cli_env(stack, tmp_path / "config")
    spec = {"model": {"kind": "q_learning", "env": "GridWorld", "alpha": 0.5, "gamma": 0.9,
                      "exploration": {"start": 1.0, "end": 0.05, "fraction": 0.5}},
            "training": {"total_steps": 3000, "eval_interval": 1000}}  # fmt: skip
    (tmp_path / "grid.json").write_text(json.dumps(spec))
    followed = run_keiko(env, "train", str(tmp_path / "grid.json"), "--follow")
    assert followed.returncode == 0, followed.stderr
    job_id = started_job(followed.stderr)
    steps = re.findall(rf"^job {job_id[:8]} step (\d+)/3000 ", followed.stderr, re.MULTILINE)
    assert steps == ["1000", "2000", "3000"]
    assert re.search(r"evaluation", followed.stdout) and "return_mean" in followed.stdout
    model_id = stack.http().get(f"/jobs/{job_id}").json()["model_id"]
    played = keiko_json(env, "rollout", model_id, "--episodes", "2", "--seed", "1")
    direct = stack.http().post(f"/models/{model_id}/rollout", json={"episodes": 2, "seed": 1})
    assert played == direct.json() and played["returns"] == [8.0, 8.0]  # the course's best
    table = run_keiko(env, "rollout", model_id, "--episodes", "2")
    assert table.returncode == 0 and "rollout" in table.stdout
