"""Command-line options come from the dataclasses that declare the settings: one place each."""

import dataclasses

import pytest

from tfdeeplab.cli import build_parser
from tfdeeplab.config import DEMO_TRAINING, DEMO_TRAINING_OPTIONS, DemoConfig, TrainConfig
from tfdeeplab.options import values


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def test_train_options_are_the_config_fields_with_their_defaults():
    args = _parse("train", "--data", "d", "--out", "o")
    config = TrainConfig(**values(TrainConfig, args))
    assert config == TrainConfig(data="d", out="o")
    declared = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata}
    assert declared == set(values(TrainConfig, args)) and "verbose" not in declared


def test_demo_takes_training_options_with_the_demo_defaults():
    args = _parse("demo", "--epochs", "2", "--no-pointrend", "--time-budget-minutes", "3")
    training = values(TrainConfig, args, DEMO_TRAINING_OPTIONS)
    assert set(training) == set(DEMO_TRAINING_OPTIONS)
    assert training["epochs"] == 2 and training["pointrend"] is False
    assert training["time_budget_minutes"] == 3.0
    assert training["image_size"] == DEMO_TRAINING["image_size"] == 193
    config = DemoConfig(**values(DemoConfig, args, exclude=("training",)))
    assert config == DemoConfig()
    assert config.training.out.endswith("train") and config.training.data.endswith("data")


def test_booleans_take_both_forms_and_choices_are_checked(capsys):
    assert (
        _parse("train", "--data", "d", "--out", "o", "--no-sync-batchnorm").sync_batchnorm is False
    )
    assert _parse("train", "--data", "d", "--out", "o", "--pointrend").pointrend is True
    with pytest.raises(SystemExit):
        _parse("train", "--data", "d", "--out", "o", "--optimizer", "adam")
    assert "invalid choice: 'adam'" in capsys.readouterr().err


def test_every_option_has_help():
    parser = build_parser()
    for name, subparser in parser._subparsers._group_actions[0].choices.items():
        if name == "benchmark":
            continue
        for action in subparser._actions:
            assert action.help, f"tfdeeplab {name} {action.option_strings} has no help"
