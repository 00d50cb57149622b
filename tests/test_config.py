from __future__ import annotations

import json
from pathlib import Path

import pytest

from somocloud.cli import embedded_config
from somocloud.config import ConfigError, RunConfig, config_from_json, load_config

CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.schema_version == 1


def test_demo_config_is_the_embedded_default() -> None:
    assert Path("configs/demo.yaml").resolve().read_text() == embedded_config("demo.yaml").read_text()


def test_misspelled_key_fails_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("schema_version: 1\ntrain:\n  epochs: 3\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "train.learning_rat: unknown key" in str(err.value)
    assert str(p) in str(err.value)


def test_wrong_type_fails_naming_it(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden_size: many\n")
    with pytest.raises(ConfigError, match=r"model\.hidden_size"):
        load_config(p)


def test_wrong_schema_version_fails() -> None:
    with pytest.raises(ConfigError, match="schema_version"):
        load_config(None, ["schema_version=2"])


def test_overrides_apply_and_are_typed() -> None:
    cfg = load_config(
        embedded_config("demo.yaml"), ["train.epochs=3", "period.end=2020-06-30", "stores.root=s3://b/x"]
    )
    assert cfg.train.epochs == 3
    assert str(cfg.period.end) == "2020-06-30"
    assert cfg.store("product") == "s3://b/x/product/soil_moisture.zarr"


def test_override_of_unknown_key_fails() -> None:
    with pytest.raises(ConfigError, match="trian: unknown key"):
        load_config(None, ["trian.epochs=3"])


def test_credentials_in_store_urls_are_rejected() -> None:
    with pytest.raises(ConfigError, match="credentials"):
        load_config(None, ["stores.root=s3://AKIA:secret@bucket/x"])


def test_resolved_config_round_trips() -> None:
    cfg = load_config(embedded_config("demo.yaml"))
    again = config_from_json(cfg.resolved_json())
    assert again.resolved() == cfg.resolved()
    assert json.loads(cfg.resolved_json())["stores"]["forcing"].endswith("work/forcing.zarr")


def test_lookback_start() -> None:
    cfg = RunConfig.model_validate(
        {"period": {"start": "2000-01-01", "end": "2000-12-31"}, "model": {"seq_length": 365}}
    )
    assert cfg.model.cascade and cfg.model.stages == 3
    assert str(cfg.lookback_start) == "1997-01-04"  # three chained windows: 3 x 364 days before
    cfg.model.cascade = False
    assert str(cfg.lookback_start) == "1999-01-02"  # one window of 365 days ending on 2000-01-01


def test_grid_edges_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="lat_max"):
        load_config(None, ["grid.lat_min=10", "grid.lat_max=5"])


def test_cli_overrides_anywhere_and_errors_before_work(capsys: pytest.CaptureFixture[str]) -> None:
    from somocloud.cli import main

    assert main(["config", "train.epochs=3", "--no-progress", "model.dropout=0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["epochs"] == 3 and out["model"]["dropout"] == 0.3
    assert main(["train", "--no-progress", "train.epochs=many"]) == 2  # before any work: no cluster started
    assert "train.epochs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["config", "--bogus-flag"])
