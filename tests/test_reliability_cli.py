"""Hostile input to the commands: deep or huge JSON is refused before parsing, a training configuration is checked
whole before any work, and `compare`/`eval` refuse APs that are not finite numbers and resample counts past their
bound. Each refusal is one line ``error: ...`` naming the file or setting and the problem, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from profashion.cli import main

DEEP = "[" * 100_000  # 100 KB: small, but past Python's recursion limit for the json module
CLI = "import sys; from profashion.cli import main; sys.exit(main(sys.argv[1:]))"


def _one_error_line(err: str) -> str:
    """``err`` checked as one line ``error: ...`` without a traceback; the line."""
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def _result(path: Path, ap: list, model: str = "m") -> Path:
    """A result file of `profashion eval --json` with per-query APs (4 queries over attributes x, y)."""
    path.write_text(json.dumps({
        "overall": 50.0, "model": model, "dataset": "d", "split": "test",
        "queries": {"attributes": ["x", "y"], "fid": [0, 1, 2, 3], "attribute": [0, 1, 0, 1], "value": [0, 0, 1, 1],
                    "ap": ap}}))
    return path


def _run_watched(argv: list[str], max_rss: int = 3 << 29, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, killed (and the test failed) past ``max_rss`` bytes of memory or
    ``timeout`` seconds: an unbounded read must not take the machine down with it."""
    p = subprocess.Popen([sys.executable, "-c", CLI, *argv], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while p.poll() is None:
        try:
            rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p.pid}/status").read_text()).group(1)) * 1024
        except (OSError, AttributeError):
            rss = 0
        if rss > max_rss or time.monotonic() - t0 > timeout:
            p.kill()
            p.communicate()
            pytest.fail(f"`profashion {' '.join(argv)}` reached {rss >> 20} MB after {time.monotonic() - t0:.0f}s")
        time.sleep(0.05)
    out, err = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


# --------------------------------------------------------------------------------------------------
# Deep or huge JSON (issue item 9)


def test_train_refuses_a_config_nested_100000_deep(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert str(path) in err and "more than 32 levels deep" in err, err
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_model_config_flag_nested_100000_deep(tmp_path, capsys):
    assert main(["train", "--model", "asen", "--dataset", "d", "--out", str(tmp_path / "run"),
                 "--model-config", DEEP]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "--model-config" in err and "more than 32 levels deep" in err, err


def test_train_refuses_a_2_mb_config_file(tmp_path, capsys):
    path = tmp_path / "big.json"
    path.write_text('{"model": "asen", "dataset": "d"' + " " * (2 << 20) + "}")  # valid JSON, 2 MB of spaces
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert str(path) in err and "larger than 1 MB" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists() or not Path("/proc/self/status").exists(),
                    reason="needs /dev/zero and /proc (Linux)")
def test_train_with_config_dev_zero_stops_at_the_limit(tmp_path):
    """An endless file: at most 1 MB + 1 byte is read, then one line; the process stays far below 1.5 GB."""
    done = _run_watched(["train", "--config", "/dev/zero", "--out", str(tmp_path / "run")])
    assert done.returncode == 2, done.stderr
    err = _one_error_line(done.stderr)
    assert "/dev/zero" in err and "larger than 1 MB" in err, err
    assert not (tmp_path / "run").exists()


def test_compare_refuses_a_result_file_nested_100000_deep(tmp_path, capsys):
    a = _result(tmp_path / "r.json", [0.5, 0.25, 1.0, 0.0])
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    assert main(["compare", str(a), str(deep)]) == 2
    captured = capsys.readouterr()
    err = _one_error_line(captured.err)
    assert str(deep) in err and "more than 32 levels deep" in err, err
    assert captured.out == ""


def test_read_checkpoint_config_refuses_a_config_json_nested_100000_deep(tmp_path):
    from profashion.models.base import ModelError, read_checkpoint_config

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(DEEP)
    with pytest.raises(ModelError) as info:
        read_checkpoint_config(ckpt)
    msg = str(info.value)
    assert "\n" not in msg and str(ckpt / "config.json") in msg and "more than 32 levels deep" in msg, msg


# -- profashion.io: the depth scan and the bounded parse ----------------------------------------------------


@pytest.mark.parametrize("text, depth", [
    ("1", 0),
    ("[]", 1),
    ('{"a": [1]}', 2),
    (r'["[[[[", "\"[[["]', 1),  # brackets in strings, an escaped quote among them
    (r'["\\", [1]]', 2),  # an escaped backslash ends the string: the [1] after it counts
    ('{"k": "}}}]]]", "v": [{"w": []}]}', 4),  # {, [, {, [ outside the string
])
def test_json_depth_counts_brackets_outside_strings_only(text, depth):
    from profashion.io import json_depth

    assert json_depth(text) == depth


def test_json_depth_follows_strings_across_its_chunks():
    """Escapes split between two scanned chunks (1 << 18 bytes each) are followed."""
    from profashion.io import json_depth

    k = (1 << 18) - 3  # the backslash at byte 2 + k = (1 << 18) - 1, what it escapes at 1 << 18
    assert json_depth('["' + "a" * k + '\\"[[[[' + '"]') == 1  # an escaped quote: the brackets are in the string
    assert json_depth('["' + "a" * k + '\\\\' + '", [[1]]]') == 3  # an escaped backslash: the string ends


def test_loads_json_takes_the_depth_limit_itself_and_refuses_one_more():
    from profashion.io import JSONLimitError, loads_json

    expected: list = []
    for _ in range(31):
        expected = [expected]
    assert loads_json("[" * 32 + "]" * 32) == expected  # 32 levels: the limit
    with pytest.raises(JSONLimitError, match="more than 32 levels deep"):
        loads_json("[" * 33 + "]" * 33)
    assert loads_json('["' + "[" * 100 + '"]') == ["[" * 100]  # brackets in a string are not nesting


def test_loads_json_refuses_more_than_1_mb_before_parsing(monkeypatch):
    from profashion import io as pio

    exact = '"' + "a" * ((1 << 20) - 2) + '"'  # 1 MB exactly
    assert pio.loads_json(exact) == "a" * ((1 << 20) - 2)

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed")

    monkeypatch.setattr(pio.json, "loads", no_parse)
    with pytest.raises(pio.JSONLimitError, match="the text is larger than 1 MB"):
        pio.loads_json('"' + "a" * ((1 << 20) - 1) + '"', what="the text")  # 1 MB + 1 byte
    with pytest.raises(pio.JSONLimitError, match="larger than 1 MB"):
        pio.loads_json('"' + "é" * (1 << 19) + '"')  # 2^19 + 2 characters, 2^20 + 2 bytes of UTF-8


def test_loads_json_refuses_bytes_that_are_not_utf8():
    from profashion.io import JSONLimitError, loads_json

    with pytest.raises(JSONLimitError) as info:
        loads_json(b'["\xff"]', what="the file f.json")
    assert str(info.value).startswith("the file f.json is not UTF-8 text (byte 2)"), str(info.value)


def test_loads_json_refuses_a_5000_digit_number_in_one_sentence():
    from profashion.io import JSONLimitError, loads_json

    for text in ("1" * 5000, "[" + "1" * 5000 + "]"):
        with pytest.raises(JSONLimitError) as info:
            loads_json(text, what="the file n.json", fix="write a smaller number")
        msg = str(info.value)
        assert isinstance(info.value, ValueError)
        assert msg.startswith("the file n.json cannot be read as JSON (") and msg.endswith("; write a smaller number")
        assert "\n" not in msg and len(msg) < 200, msg


def test_read_json_reads_an_endless_file_only_up_to_its_limit(tmp_path):
    from profashion.io import JSONLimitError, read_bytes_bounded, read_json

    t0 = time.perf_counter()
    with pytest.raises(JSONLimitError, match="is larger than 1 KB"):
        read_bytes_bounded("/dev/zero", 1024)
    with pytest.raises(JSONLimitError, match="/dev/zero is larger than 1 MB"):
        read_json("/dev/zero")
    assert time.perf_counter() - t0 < 5
    with pytest.raises(JSONLimitError, match="cannot be read"):
        read_json(tmp_path)  # a folder
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------------
# Every training setting checked before any work (issue item 10)

TINY = {"model": "triplet", "preset": "scratch", "model_overrides": {"image_size": 48, "resize": 48},
        "epochs": 1, "batch_size": 16, "triplets_per_epoch": 64, "warmup_steps": 2}


@pytest.fixture
def no_work(monkeypatch):
    """The trainer's first reads of the dataset and its images fail the test if reached."""
    from profashion.train import trainer

    def reached(*args, **kwargs):
        raise AssertionError("the run started work before its settings were checked")

    monkeypatch.setattr(trainer, "load_dataset", reached)
    monkeypatch.setattr(trainer, "SplitImages", reached)


@pytest.mark.parametrize("setting, value, expected", [
    ("seed", -5, "--seed must be a whole number from 0 to 4294967295, got -5"),
    ("lr", "abc", "'lr' must be a number, got \"abc\""),
    ("lr", -1, "--lr must be a number above 0 up to 10, got -1"),
    ("epochs", 0, "--epochs must be at least 1, got 0"),
    ("device", "gpu9", "--device must be auto, cpu, cuda, cuda:N or mps, got \"gpu9\""),
    ("num_workers", 1000, "the setting 'num_workers' must be a whole number from 0 to 64, got 1000"),
    ("margin", float("nan"), "the setting 'margin' must be a number from 0 to 2, got NaN"),
])
def test_a_bad_training_setting_is_refused_before_any_work(tiny_synth, tmp_path, capsys, no_work, setting, value,
                                                           expected):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY, "dataset": str(tiny_synth), setting: value}))  # NaN written as NaN
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert expected in err, err
    assert not out.exists()  # no args.json, no progress.json, no folder


@pytest.mark.parametrize("flags, expected", [
    (["--seed", "-5"], "--seed must be a whole number from 0 to 4294967295, got -5"),
    (["--device", "gpu9"], "--device must be auto, cpu, cuda, cuda:N or mps, got \"gpu9\""),
])
def test_a_bad_training_flag_is_refused_before_any_work(tiny_synth, tmp_path, capsys, no_work, flags, expected):
    out = tmp_path / "run"
    assert main(["train", "--model", "triplet", "--dataset", str(tiny_synth), "--out", str(out), "--preset",
                 "scratch", "--epochs", "1", "--quiet", *flags]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert expected in err, err
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# `compare` and `eval` on bad numbers (issue item 11)


def test_compare_accepts_the_hand_made_result_files(tmp_path, capsys):
    """The control of the tests below: two well-formed files compare."""
    a = _result(tmp_path / "a.json", [0.5, 0.25, 1.0, 0.0])
    b = _result(tmp_path / "b.json", [0.75, 0.25, 1.0, 0.5], model="other")
    assert main(["compare", str(a), str(b), "--resamples", "200", "--permutations", "200"]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "nan" not in out


@pytest.mark.parametrize("ap, index, shown", [
    (["0.5", "0.25", "1.0", "0.0"], 0, '"0.5"'),  # numbers as strings (once converted silently)
    ([0.5, 0.25, "high", 0.0], 2, '"high"'),
    ([0.5, 0.25, float("nan"), 0.0], 2, "NaN"),
    ([0.5, float("inf"), 1.0, 0.0], 1, "Infinity"),
    ([0.5, 0.25, 1.0, float("-inf")], 3, "-Infinity"),
    ([0.5, 0.25, 1.5, 0.0], 2, "1.5"),  # an AP is a fraction
])
def test_compare_refuses_aps_that_are_not_finite_numbers(tmp_path, capsys, ap, index, shown):
    a = _result(tmp_path / "a.json", [0.5, 0.25, 1.0, 0.0])
    b = _result(tmp_path / "b.json", ap, model="other")  # json.dumps writes NaN, Infinity, -Infinity
    assert main(["compare", str(a), str(b), "--resamples", "200", "--permutations", "200"]) == 2
    captured = capsys.readouterr()
    err = _one_error_line(captured.err)
    assert err == (f"error: {b}: the field queries.ap[{index}] must be a finite number from 0 to 1, got {shown}; "
                   "write the file again with `profashion eval --json`\n"), err
    assert captured.out == ""  # no table, no "nan +nan ... *"
    assert "nan" not in (captured.out + err).replace(str(tmp_path), "")


@pytest.mark.parametrize("flag", ["--resamples", "--permutations"])
def test_compare_bounds_its_counts_before_reading_the_files(tmp_path, capsys, flag):
    missing = tmp_path / "missing.json"
    assert main(["compare", str(missing), str(missing), flag, "100000000"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert f"{flag} must be a whole number from 1 to 100,000, got 100000000" in err, err
    assert "not found" not in err
    assert main(["compare", str(missing), str(missing), flag, "0"]) == 2
    assert f"{flag} must be a whole number from 1 to 100,000, got 0" in capsys.readouterr().err


def test_eval_bounds_its_resamples_before_reading_the_dataset(tmp_path, capsys):
    missing = tmp_path / "no-dataset"
    assert main(["eval", "--dataset", str(missing), "--embeddings", "random", "--resamples", "100000000"]) == 2
    err = _one_error_line(capsys.readouterr().err)
    assert "--resamples must be a whole number from 1 to 100,000, got 100000000" in err, err
    assert "no-dataset" not in err


def test_the_statistics_functions_bound_their_counts():
    from profashion.evaluation.statistics import check_permutations, check_resamples

    assert check_resamples(1) == 1 and check_resamples(100_000) == 100_000
    assert check_permutations(1) == 1 and check_permutations(100_000) == 100_000
    for bad in (0, 100_001, 10**9, True, 2.0, "200"):
        with pytest.raises(ValueError, match="n_resamples must be a whole number from 1 to 100,000"):
            check_resamples(bad)
        with pytest.raises(ValueError, match="n_permutations must be a whole number from 1 to 100,000"):
            check_permutations(bad)
