"""One training configuration: TrainConfig to and from JSON, `profashion train --config` with flags over it, and
the modules the CLI and the app read it through without the trainer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from profashion.cli import build_parser, main, train_config
from profashion.train.config import TrainConfig, planned_epochs, read_config


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_a_config_round_trips_through_json(tmp_path):
    cfg = TrainConfig(model="asen", dataset="d", out="o", epochs=2, attributes=["colour"],
                      model_overrides={"embed_dim": 32}, frozen_trunk=True)
    path = cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(path) == cfg
    assert json.loads(path.read_text()) == cfg.to_json()


def test_flags_override_the_config_file(tmp_path):
    path = TrainConfig(model="asen", dataset="d", out="o", epochs=2, seed=3,
                       model_overrides={"embed_dim": 32, "image_size": 48}).save(tmp_path / "c.json")
    cfg = train_config(_args("--config", str(path), "--epochs", "5", "--out", "elsewhere",
                             "--model-config", '{"embed_dim": 16}', "--attributes", "colour, sleeve"))
    assert (cfg.model, cfg.dataset, cfg.out, cfg.epochs, cfg.seed) == ("asen", "d", "elsewhere", 5, 3)
    assert cfg.model_overrides == {"embed_dim": 16, "image_size": 48}  # entry by entry
    assert cfg.attributes == ["colour", "sleeve"]
    # flags not given leave the file's settings alone (no argparse default overrides them)
    same = train_config(_args("--config", str(path)))
    assert same == TrainConfig.load(path)


def test_flags_alone_still_make_a_config():
    cfg = train_config(_args("--model", "csn", "--dataset", "d", "--out", "o", "--frozen-trunk"))
    assert cfg == TrainConfig(model="csn", dataset="d", out="o", frozen_trunk=True)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "must be a JSON object"),
    ('{"model": "asen", "dataset": "d", "epoch": 3}', "unknown setting.*'epoch'"),
    ('{"model": "asen", "dataset": "d", "epochs": "three"}', "'epochs' must be a whole number"),
    ('{"model": "asen", "dataset": "d", "frozen_trunk": 1}', "'frozen_trunk' must be true or false"),
    ('{"model": "asen", "dataset": "d", "attributes": [1]}', "'attributes' must be a list of names"),
    ("{not json", "cannot be read as JSON"),
])
def test_a_wrong_config_file_is_one_sentence(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_a_config_without_model_or_out_is_refused(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"dataset": "d"}')
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "names no model" in capsys.readouterr().err
    assert main(["train", "--model", "asen", "--dataset", "d"]) == 2
    assert "give --out" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.json"), "--out", "o"]) == 2
    assert "configuration file not found" in capsys.readouterr().err


def test_total_epochs_come_from_the_config_or_its_preset():
    assert TrainConfig(model="asen", dataset="d").total_epochs == 3  # the demo preset's
    assert TrainConfig(model="asen", dataset="d", epochs=2, stage2_epochs=4).total_epochs == 6
    resolved = TrainConfig(model="profashion", dataset="d", preset="paper").resolved().to_json()
    assert planned_epochs(resolved) == 100


def test_a_runs_args_json_is_a_config_file(tiny_synth, tmp_path):
    """The run's own args.json trains a second run with the same settings."""
    from conftest import TINY_TRAIN

    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(first), "--epochs", "1",
                 *TINY_TRAIN]) == 0
    assert main(["train", "--config", str(first / "args.json"), "--out", str(second), "--quiet"]) == 0
    a, b = read_config(first / "args.json"), read_config(second / "args.json")
    assert {**a, "out": ""} == {**b, "out": ""}


def test_the_cli_and_the_job_manager_do_not_import_the_trainer():
    code = ("import sys; import profashion.cli, profashion.explorer.jobs, profashion.train.config, profashion.device; "
            "print('profashion.train.trainer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_no_repository_path_arithmetic_in_the_library():
    """The library takes its roots from arguments or the environment: no ``Path(__file__).parents[N]``."""
    offenders = []
    for path in sorted((REPO / "profashion").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("parents", "parent") and "Path(__file__)" in ast.unparse(node):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_no_library_function_is_over_150_lines():
    long = []
    for path in sorted((REPO / "profashion" / "train").rglob("*.py")) + [REPO / "profashion" / "cli.py",
                                                                           REPO / "profashion" / "explorer" / "jobs.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 150:
                long.append(f"{Path(path).relative_to(REPO)}:{node.name}")
    assert not long, long
