"""One cache root for every mer cache: the folders stay where they were."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_every_cache_lives_under_xdg_cache_home(monkeypatch, tmp_path: Path) -> None:
    from mercli.data.text_states import cache_dir as text_states_dir
    from mercli.features.cache import cache_dir as features_dir
    from mercli.features.whisper_offline import cache_dir as whisper_dir
    from mercli.split_archive import cache_root as models_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert features_dir() == tmp_path / "mer" / "features"
    assert whisper_dir() == tmp_path / "mer" / "whisper"
    assert models_dir() == tmp_path / "mer" / "models"
    assert text_states_dir() == tmp_path / "mer" / "text_states"


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_xdg_cache_home_means_dot_cache(monkeypatch, tmp_path, value) -> None:
    from mercli.paths import cache_home, mer_cache

    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert cache_home() == tmp_path / ".cache"
    assert mer_cache("features") == tmp_path / ".cache" / "mer" / "features"
