from pathlib import Path

import pytest
import yaml

from lightning_calib.config import ConfigError, compose, merge


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_merge_dicts_recursively_lists_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    out = merge(base, {"a": {"y": [3]}, "c": 4})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # not modified


def test_merge_other_class_path_replaces_whole_dict():
    base = {"loss": {"class_path": "losses.MbLS", "init_args": {"margin": 10.0}}}
    out = merge(base, {"loss": {"class_path": "losses.ACLS", "init_args": {"alpha": 0.2}}})
    assert out["loss"] == {"class_path": "losses.ACLS", "init_args": {"alpha": 0.2}}
    same = merge(base, {"loss": {"class_path": "losses.MbLS", "init_args": {"alpha": 0.2}}})
    assert same["loss"]["init_args"] == {"margin": 10.0, "alpha": 0.2}


def test_compose_chain_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "root.yaml", {"a": 1, "b": {"c": 1, "d": 1}})
    write(tmp_path / "sub" / "mid.yaml", {"__base__": "../root.yaml", "b": {"c": 2}})
    leaf = write(tmp_path / "sub" / "leaf.yaml", {"__base__": ["mid.yaml"], "b": {"d": 3}})
    assert compose(leaf) == {"a": 1, "b": {"c": 2, "d": 3}}


def test_compose_errors_name_the_file(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", {"__base__": "missing.yaml"})
    with pytest.raises(ConfigError, match=r"missing\.yaml.*named in .*leaf\.yaml"):
        compose(leaf)
    a = write(tmp_path / "a.yaml", {"__base__": "b.yaml"})
    write(tmp_path / "b.yaml", {"__base__": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        compose(a)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        compose(bad)


def test_expand_configs_composes_files_and_keeps_inline_yaml(tmp_path):
    from lightning_calib.cli import expand_configs

    write(tmp_path / "base.yaml", {"trainer": {"max_epochs": 3}})
    leaf = write(tmp_path / "leaf.yaml", {"__base__": "base.yaml", "model": {"n_bins": 10}})
    out = expand_configs(["fit", "--config", str(leaf), "--trainer.max_epochs=4"])
    assert out[:2] == ["fit", "--config"] and out[3] == "--trainer.max_epochs=4"
    assert yaml.safe_load(out[2]) == {"trainer": {"max_epochs": 3}, "model": {"n_bins": 10}}
    # other DDP ranks are re-launched with the composed text itself: it must pass through
    assert expand_configs(["fit", "--config", out[2]]) == ["fit", "--config", out[2]]
    plain = write(tmp_path / "plain.yaml", {"a": 1})
    assert expand_configs([f"--config={plain}"]) == ["--config", str(plain)]
