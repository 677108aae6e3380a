"""Run identity, checked by training: for every field of the smoke profile, a valid perturbation either
changes the run's name, or leaves it unchanged and trains a bit-identical model.

The fields whose perturbation leaves a name unchanged are perturbed together (one group per model) and the
model is trained with all of them (a few steps, tiny): the trained tensors must equal the unperturbed run's
bit for bit. The test reads no role declarations: it finds by itself a field that changes what is trained
without changing the name (say, a training loss chosen by a field of the evaluation section), and names it.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagefolder import config, pipeline

# a tiny run: three steps of each model, the adversarial terms on from step 1
BASE = {"train_tokenizer.steps": 3, "train_generator.steps": 3, "tokenizer.disc_start": 1,
        "train_tokenizer.warmup_steps": 1, "train_generator.warmup_steps": 1}

# Perturbations the generic rule (`_generic`) would not make valid, or would make in a way that says nothing.
PERTURBATIONS = {
    "profile": "cpu",
    "device": "cuda" if torch.cuda.is_available() else "cpu",  # the device "auto" picks: a valid, equal choice
    "quantizer.scales": [1, 1, 1, 1, 2, 2, 3, 3, 3, 4],
    "quantizer.dropout_n_start": 2,
    "train_tokenizer.betas": [0.8, 0.95],
    "train_generator.betas": [0.8, 0.95],
    "teacher.train.betas": [0.8, 0.95],
    "evaluator.train.betas": [0.8, 0.95],
    "teacher.labels": ["category"],
    "evaluator.labels": ["category"],
    "study.seeds": [3, 4],
    "study.budget_check_seeds": 1,
}

# Fields with no valid perturbation that keeps the property, and why.
NO_PERTURBATION = {
    "train_tokenizer.compile": "execution: a compiled step rounds differently from an eager one (they agree to "
                               "float rounding, not bit for bit), and inductor takes minutes on 2 cores",
    "train_generator.compile": "as train_tokenizer.compile",
    "run_dir": "perturbed by every group: each training writes under its own run_dir",
    "tokenizer.token_source": "feature_map, the only other choice, needs quantizer.branches = 1 and the last "
                              "scale at the patch grid: valid only with fields that rename the run anyway",
    "tokenizer.teacher_patch_size": "re-patches a pretrained teacher: valid only with tokenizer.teacher_network "
                                    "set to one, which renames the run anyway",
}


def _leaves(node, path=""):
    """Dotted path → (value, annotation) of every leaf field of a config instance."""
    hints = typing.get_type_hints(type(node))
    out = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            out |= _leaves(value, f"{path}{f.name}.")
        else:
            out[f"{path}{f.name}"] = (value, hints[f.name])
    return out


def _generic(value, hint) -> list:
    """Other values of the field's type, to be tried in order: a flipped bool, the other choices, a doubled or
    incremented int, a halved float, None ↔ a value."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = next(h for h in args if h is not type(None))
        return [None] if value is not None else [2, 1] if inner is int else []
    if typing.get_origin(hint) is typing.Literal:
        return [choice for choice in args if choice != value]
    if hint is bool:
        return [not value]
    if hint is int:
        return [value * 2, value + 1] if value else [1]
    if hint is float:
        return [value / 2] if value else [0.1]
    if hint is str:
        return ["black" if value == "white" else value + "-other"]
    return []


def _cfg(run_dir: Path, overrides: dict | None = None) -> config.Config:
    return config.profile("smoke", BASE | {"run_dir": str(run_dir)} | (overrides or {}))


def _names(cfg: config.Config) -> tuple[str, str]:
    return pipeline.tokenizer_name(cfg), pipeline.generator_name(cfg)


def _perturbations(tmp: Path) -> dict[str, object]:
    """Field → its perturbation, for every leaf field of the smoke profile with one (each checked valid)."""
    out = {}
    for path, (value, hint) in _leaves(_cfg(tmp)).items():
        if path in NO_PERTURBATION:
            continue
        errors = []
        for new in [PERTURBATIONS[path]] if path in PERTURBATIONS else _generic(value, hint):
            assert new != value, path
            try:
                _cfg(tmp, {path: new})
            except config.ConfigError as err:
                errors.append(f"{new!r}: {err}")
                continue
            out[path] = new
            break
        else:
            pytest.fail(f"{path}: no valid perturbation ({'; '.join(errors) or 'none tried'}); give one in "
                        "PERTURBATIONS or say why there is none in NO_PERTURBATION")
    return out


def _differ(a: Path, b: Path) -> list[str]:
    """The tensors of two model files that are not equal bit for bit (all of them if the names differ)."""
    ta, tb = load_file(str(a)), load_file(str(b))
    return sorted(ta.keys() ^ tb.keys()) or [k for k in ta if not torch.equal(ta[k], tb[k])]


def _assert_same_model(train, base: Path, perturbed: dict, run_dir: Path) -> None:
    """`train` (pipeline.train_tokenizer or train_generator) with every `perturbed` field gives the model at
    `base`; if not, the fields are halved until the one that changes the model is found and named."""
    changed = _differ(base, train(_cfg(run_dir, perturbed)))
    if not changed:
        return
    fields = sorted(perturbed)
    while len(fields) > 1:
        half = fields[:len(fields) // 2]
        suspect = _differ(base, train(_cfg(run_dir / f"bisect-{len(fields)}", {f: perturbed[f] for f in half})))
        fields = half if suspect else fields[len(fields) // 2:]
    pytest.fail(f"{fields[0]}={perturbed[fields[0]]!r} changes what {train.__name__} trains ({len(changed)} "
                f"tensors differ, e.g. {changed[0]}) but not the run's name")


def test_every_field_renames_the_run_or_trains_the_same_model(tmp_path):
    base = _cfg(tmp_path / "base")
    perturbations = _perturbations(tmp_path / "base")
    assert set(perturbations) | set(NO_PERTURBATION) == set(_leaves(base))
    tok_name, gen_name = _names(base)
    same_tokenizer, same_generator = {}, {}
    for path, value in perturbations.items():
        tok, gen = _names(_cfg(tmp_path / "base", {path: value}))
        if tok == tok_name:
            same_tokenizer[path] = value
        if gen == gen_name:
            same_generator[path] = value
        assert tok == tok_name or gen != gen_name, f"{path}: renames the tokenizer but not its generator"

    base_gen = pipeline.train_generator(base)
    base_tok = pipeline.train_tokenizer(base)
    assert _names(_cfg(tmp_path, same_tokenizer))[0] == tok_name, "each keeps the name, together they change it"
    assert _names(_cfg(tmp_path, same_generator))[1] == gen_name, "each keeps the name, together they change it"
    # the fields that leave the tokenizer's name (the generator's among them), all perturbed at once
    _assert_same_model(pipeline.train_tokenizer, base_tok, same_tokenizer, tmp_path / "tokenizer")
    # those that leave the generator's name: the same generator, on the same tokenizer
    _assert_same_model(pipeline.train_generator, base_gen, same_generator, tmp_path / "generator")


def test_the_names_follow_the_declared_roles(tmp_path):
    """What the property test finds by training is what `config.ROLES` declares: a field renames the
    tokenizer exactly when its role is TOKENIZER, the generator when it is TOKENIZER or GENERATOR."""
    base = _names(_cfg(tmp_path))
    for path, value in _perturbations(tmp_path).items():
        tok, gen = _names(_cfg(tmp_path, {path: value}))
        role = config.role(path)
        renames = (role == config.TOKENIZER, role in config.RUN_ROLES["generator"])
        assert (tok != base[0], gen != base[1]) == renames, path
