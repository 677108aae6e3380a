import subprocess
import sys

import pytest
import yaml

from imagefolder import cli


def test_config_command_applies_overrides(capsys):
    cli.main(["config", "--profile", "cpu", "quantizer.dropout_p=0.5"])  # the README's example
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["profile"] == "cpu" and printed["quantizer"]["dropout_p"] == 0.5


def test_bad_override_exits_with_the_field_named():
    with pytest.raises(SystemExit, match="quantizer.dropout_n_start"):
        cli.main(["config", "--profile", "smoke", "quantizer.dropout_n_start=99"])


def test_train_tokenizer_command_writes_a_model(tmp_path, capsys):
    cli.main(["train-tokenizer", "--profile", "smoke", f"run_dir={tmp_path}", "train_tokenizer.steps=2",
              "train_tokenizer.warmup_steps=1"])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith("model.safetensors") and path.startswith(str(tmp_path))


def test_evaluate_trains_nothing_and_names_the_missing_run(tmp_path):
    with pytest.raises(SystemExit, match=rf"no trained tokenizer at {tmp_path}/smoke/tokenizer/tok-\w+/model"):
        cli.main(["evaluate", "--profile", "smoke", f"run_dir={tmp_path}"])
    assert not (tmp_path / "smoke" / "tokenizer").exists()


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "imagefolder", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train-tokenizer" in proc.stdout
