"""The test suite's own promises (tests/conftest.py): no test touches the user's cache; under ``CI=true`` a browser
that cannot start fails the browser tests instead of skipping them; a job started by a test does not outlive its
fixture's teardown. The last two run a small pytest session of their own beside this one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, end_jobs, group_alive

CONFTEST = Path(__file__).with_name("conftest.py")


def _under(path, base: Path) -> bool:
    return Path(path).resolve().is_relative_to(base.resolve())


def test_every_cache_the_library_finds_is_under_pytests_temp_dir(tmp_path_factory):
    """The app's cache (catalog, jobs), the trainer's trunk features, the converted ImageNet weights and the
    caches of the libraries they call (Hugging Face, torch, matplotlib) all resolve under pytest's basetemp: a
    test run neither reads nor writes ``~/.cache/profashion``."""
    import huggingface_hub.constants
    import matplotlib
    import torch.hub

    from profashion.explorer.jobs import default_jobs_root
    from profashion.models.pretrained import cache_dir
    from profashion.paths import cache_root
    from profashion.train.trainer import trunk_cache_dir

    base = tmp_path_factory.getbasetemp()
    user = Path.home() / ".cache"
    roots = {"catalog": cache_root(), "jobs": default_jobs_root(cache_root()),
             "trunk features": trunk_cache_dir(), "weights": cache_dir(),
             "huggingface": huggingface_hub.constants.HF_HUB_CACHE, "torch hub": torch.hub.get_dir(),
             "matplotlib": matplotlib.get_cachedir()}
    for name, root in roots.items():
        assert _under(root, base), f"the {name} cache {root} is outside pytest's temp dir {base}"
        assert base.resolve().is_relative_to(user.resolve()) or not _under(root, user), f"{name}: {root}"
    # subprocesses (the CLI, jobs, app.py) inherit the same environment
    assert _under(os.environ["PROFASHION_CACHE"], base) and _under(os.environ["XDG_CACHE_HOME"], base)
    assert "PROFASHION_JOBS" not in os.environ


def _inner_pytest(folder: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """pytest run on ``folder`` (its own conftest and tests) in a fresh process; CI is whatever ``env`` says."""
    env = {k: v for k, v in os.environ.items() if k != "CI"} | env
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--basetemp",
           str(folder / "basetemp"), *args, str(folder)]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


BROWSER_TESTS = '''
import pytest
from conftest import CHROMIUM


def test_with_the_browser_fixture(browser):
    pass


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="browser tests skipped: /usr/bin/chromium is missing")
def test_with_a_skipif_of_its_own():
    pass
'''


@pytest.fixture
def browserless(tmp_path) -> Path:
    """A test folder whose conftest (this suite's) looks for Chromium at the path in $TEST_CHROMIUM."""
    folder = tmp_path / "browserless"
    folder.mkdir()
    text = CONFTEST.read_text()
    assert text.count('CHROMIUM = Path("/usr/bin/chromium")') == 1
    (folder / "conftest.py").write_text(
        text.replace('CHROMIUM = Path("/usr/bin/chromium")', 'CHROMIUM = Path(os.environ["TEST_CHROMIUM"])'))
    (folder / "test_needs_a_browser.py").write_text(BROWSER_TESTS)
    return folder


def test_a_missing_chromium_fails_the_browser_tests_under_ci_and_skips_them_elsewhere(browserless, tmp_path):
    missing = str(tmp_path / "no-chromium")
    sentence = f"{missing} is missing: install Debian's chromium with `apt-get install chromium`"
    ci = _inner_pytest(browserless, {"TEST_CHROMIUM": missing, "CI": "true"})
    # both fail in their setup (pytest counts a failed setup as an error): exit status 1, nothing skipped
    assert ci.returncode == 1 and "2 errors" in ci.stdout and "skipped" not in ci.stdout, ci.stdout
    assert ci.stdout.count(sentence) >= 2 and "CI=true: browser tests may not skip" in ci.stdout, ci.stdout
    local = _inner_pytest(browserless, {"TEST_CHROMIUM": missing})
    assert local.returncode == 0 and "2 skipped" in local.stdout and sentence in local.stdout, local.stdout


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Playwright's launcher: /usr/bin/chromium is missing")
def test_a_chromium_that_does_not_start_fails_under_ci(browserless, tmp_path):
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'this is not a browser' >&2\nexit 1\n")
    broken.chmod(0o755)
    ci = _inner_pytest(browserless, {"TEST_CHROMIUM": str(broken), "CI": "true"}, "-k", "browser_fixture")
    assert ci.returncode == 1 and "1 error" in ci.stdout and "skipped" not in ci.stdout, ci.stdout
    assert f"Debian's Chromium ({broken}) is installed but does not start" in ci.stdout, ci.stdout


JOB_TESTS = '''
import os
from pathlib import Path

import pytest
from conftest import end_jobs, group_alive

from profashion.explorer.jobs import JobManager

RECORD = Path(os.environ["JOB_RECORD"])


def start(root):
    """A job as the app starts one (its own session), whose "trainer" sleeps with a child."""
    manager = JobManager(root, [root], python=os.environ["FAKE_TRAINER"], enabled=True)
    (root / "job-1").mkdir(parents=True)
    job = manager._start({"id": "job-1", "test": False}, resume=False)
    assert job["status"] == "running" and group_alive(job["pid"])
    return manager, job["pid"]


@pytest.fixture
def ended(tmp_path):
    """As every fixture of the suite that starts jobs: its teardown ends them."""
    manager, pid = start(tmp_path / "jobs")
    yield pid
    end_jobs(manager)


@pytest.fixture
def leaked():
    """Without that teardown (and outside the temp dir, where the session's net does not look)."""
    _, pid = start(Path(os.environ["LEAK_ROOT"]))
    yield pid


def test_a_test_times_out_while_its_job_trains(ended):
    (RECORD / "ended").write_text(str(ended))
    pytest.fail("timed out waiting for the job")


def test_the_job_of_the_test_before_is_gone():
    assert not group_alive(int((RECORD / "ended").read_text()))


def test_a_test_without_the_teardown(leaked):
    (RECORD / "leaked").write_text(str(leaked))
    pytest.fail("timed out waiting for the job")
'''


def test_a_started_jobs_process_group_is_gone_after_teardown(tmp_path):
    """A test that fails (or times out) while its job trains: the fixture's teardown ends the job's whole process
    group, before the next test and before pytest exits. The same job without that teardown outlives pytest,
    which is what the teardown is for."""
    folder, record, leak_root = tmp_path / "jobs-suite", tmp_path / "record", tmp_path / "leak"
    folder.mkdir()
    record.mkdir()
    shutil.copyfile(CONFTEST, folder / "conftest.py")
    (folder / "test_jobs_end.py").write_text(JOB_TESTS)
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nsleep 300 &\nsleep 300\n")  # a "trainer" with a child: a group, not one process
    fake.chmod(0o755)
    leaked = None
    try:
        out = _inner_pytest(folder, {"FAKE_TRAINER": str(fake), "JOB_RECORD": str(record),
                                     "LEAK_ROOT": str(leak_root)})
        assert "2 failed, 1 passed" in out.stdout, out.stdout + out.stderr
        ended = int((record / "ended").read_text())
        leaked = int((record / "leaked").read_text())
        assert not group_alive(ended)
        assert group_alive(leaked), "a job without the teardown should have outlived pytest (the check is blind)"
        assert end_jobs(leak_root) == [leaked] and not group_alive(leaked)
    finally:
        end_jobs(leak_root)
