"""Provenance names the code: the repository's state when the package was imported, and for each model
used the code that trained it."""
from __future__ import annotations

import datetime
import json

from imagefolder import config, pipeline, results


def test_models_record_the_code_that_trained_them_and_reports_list_them(tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path / "runs"), "train_tokenizer.steps": 2,
                                   "tokenizer.disc_start": 1})
    path = pipeline.train_tokenizer(cfg)
    code = json.loads(path.with_name("code.json").read_text())
    assert code == {"git": results.CODE_AT_IMPORT, "model_code_version": pipeline.MODEL_CODE_VERSION}
    assert pipeline.train_tokenizer(cfg) == path  # found, not retrained: still recorded as used
    assert results.models_used()[str(path)] == code
    trained = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC).isoformat(timespec="seconds")
    assert results.models_trained_at()[str(path)] == trained  # when the weights were written, not when used

    report = results.Report("02_pq_tokenizer", "smoke", tmp_path / "results")
    report.finish(seeds=[0], data_fingerprint=None)
    provenance = json.loads((tmp_path / "results" / "smoke" / "provenance.json").read_text())
    section = provenance["sections"]["02_pq_tokenizer"]
    assert section["git"] == results.CODE_AT_IMPORT and section["models"][str(path)] == code
    assert section["models_trained_at"][str(path)] == trained


def test_trained_at_of_a_missing_model_is_unknown(tmp_path):
    assert results.trained_at(tmp_path / "absent.safetensors") is None


def test_code_at_import_is_the_repository_state():
    assert set(results.CODE_AT_IMPORT) == {"commit", "dirty"}
    assert results.CODE_AT_IMPORT["commit"] is None or len(results.CODE_AT_IMPORT["commit"]) == 40
