"""Config field roles on hand-built sections: a field's own role, else its nearest enclosing field's
(config.role, field_roles, without_roles, run_definition); the run names and folders built on them."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefolder import config, pipeline
from imagefolder.config import BOOKKEEPING, EXECUTION, GENERATOR, TOKENIZER, ConfigError


@dataclass
class Inner:
    x: int = 1  # no role of its own: its enclosing field's
    y: int = config._role(BOOKKEEPING, 2)


@dataclass
class Outer:
    a: int = config._role(EXECUTION, 3)
    inner: Inner = config._role(TOKENIZER, factory=Inner)
    logs: Inner = config._role(BOOKKEEPING, factory=Inner)
    items: list = config._role(GENERATOR, factory=lambda: [1, 2])


def test_roles_are_declared_or_inherited():
    assert config.field_roles(Outer) == {"a": EXECUTION, "inner.x": TOKENIZER, "inner.y": BOOKKEEPING,
                                         "logs.x": BOOKKEEPING, "logs.y": BOOKKEEPING, "items": GENERATOR}
    assert config.role("inner", Outer) == TOKENIZER and config.role("inner.y", Outer) == BOOKKEEPING


@pytest.mark.parametrize("path, message", [
    ("inner.z", "inner.z: unknown config field (inner.z)"),
    ("z.x", "z.x: unknown config field (z)"),
    ("a.b", "a.b: unknown config field (a.b)"),
])
def test_unknown_paths_are_named(path, message):
    with pytest.raises(ConfigError) as err:
        config.role(path, Outer)
    assert str(err.value) == message


def test_a_field_without_any_role_is_an_error():
    with pytest.raises(ConfigError) as err:
        config.field_roles(Inner)
    assert str(err.value) == "x: no role declared for it or an enclosing field (config.ROLES)"


def test_without_roles_drops_fields_and_emptied_sections_and_copies():
    outer = Outer()
    kept = config.without_roles(outer)  # default: bookkeeping and execution go
    assert kept == {"inner": {"x": 1}, "items": [1, 2]}
    kept["items"].append(3)
    assert outer.items == [1, 2]
    assert config.without_roles(outer, (TOKENIZER,)) == {"a": 3, "inner": {"y": 2}, "logs": {"x": 1, "y": 2},
                                                         "items": [1, 2]}


def test_run_definitions_nest_the_tokenizers_inside_the_generators():
    cfg = config.profile("smoke")
    tok, gen = config.run_definition(cfg, "tokenizer"), config.run_definition(cfg, "generator")
    assert "generator" not in tok and gen["generator"]["layout"] == "folded"
    assert {k: gen[k] for k in tok} == tok  # every tokenizer section, as the tokenizer's run has it
    assert tok["quantizer"]["scales"] == [1, 1, 1, 1, 1, 1, 2, 2, 3, 4] and "compile" not in tok["train_tokenizer"]


def _name_by_hand(cfg: config.Config, model: str) -> str:
    """sha256 of the run definition plus the model-code version, as sorted JSON, first 10 hex digits."""
    definition = config.run_definition(cfg, model) | {"model_code_version": pipeline.MODEL_CODE_VERSION}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:10]
    return f"{model[:3]}-{digest}"


def test_run_names_and_folders(tmp_path):
    cfg = config.profile("smoke", {"run_dir": str(tmp_path)})
    assert pipeline.tokenizer_name(cfg) == _name_by_hand(cfg, "tokenizer")
    assert pipeline.generator_name(cfg) == _name_by_hand(cfg, "generator")
    assert pipeline.run_path(cfg, "tokenizer", "tok-x") == Path(tmp_path) / "smoke" / "tokenizer" / "tok-x"
    other_generator = config.profile("smoke", {"run_dir": str(tmp_path), "generator.depth": 2})
    other_tokenizer = config.profile("smoke", {"run_dir": str(tmp_path), "quantizer.beta": 0.5})
    assert pipeline.tokenizer_name(other_generator) == pipeline.tokenizer_name(cfg)
    assert pipeline.generator_name(other_generator) != pipeline.generator_name(cfg)
    assert pipeline.tokenizer_name(other_tokenizer) != pipeline.tokenizer_name(cfg)
    assert pipeline.generator_name(other_tokenizer) != pipeline.generator_name(cfg)  # trained on other tokens
