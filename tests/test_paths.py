"""profashion.paths: the cache and checkpoints roots, resolved the same way for the app, the trainer and the
pretrained weights."""

from __future__ import annotations

from pathlib import Path

from profashion import paths


def test_the_cache_root_honours_profashion_cache_then_xdg_then_home(monkeypatch, tmp_path):
    from profashion.explorer.catalog import Catalog
    from profashion.models.pretrained import cache_dir
    from profashion.train.trainer import trunk_cache_dir

    monkeypatch.setenv("PROFASHION_CACHE", str(tmp_path / "pf"))
    assert paths.cache_root() == tmp_path / "pf"
    monkeypatch.delenv("PROFASHION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "profashion"
    # every cache follows the one root
    assert trunk_cache_dir() == tmp_path / "xdg" / "profashion" / "trunk-features"
    assert cache_dir() == tmp_path / "xdg" / "profashion" / "weights"
    assert Catalog(tmp_path / "ck").cache_root == tmp_path / "xdg" / "profashion"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert paths.cache_root() == tmp_path / "home" / ".cache" / "profashion"


def test_the_checkpoints_root_honours_profashion_checkpoints_then_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("PROFASHION_CHECKPOINTS", raising=False)
    assert paths.checkpoints_root() == Path("checkpoints")
    assert paths.checkpoints_root(tmp_path / "repo-ck") == tmp_path / "repo-ck"
    monkeypatch.setenv("PROFASHION_CHECKPOINTS", str(tmp_path / "ck"))
    assert paths.checkpoints_root(tmp_path / "repo-ck") == tmp_path / "ck"
