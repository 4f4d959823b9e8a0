"""The backbone conformance battery behind :func:`vertebra.plugins.testing.check_backbone`.

One call runs every promise of the feature contract against a backbone, on the CPU, at tiny sizes,
and reports *every* violation at once (one :class:`~vertebra.errors.ConformanceError` listing them),
so a plugin author fixes them in one round instead of one per test run:

==================  ===================================================================================
check               what must hold
==================  ===================================================================================
``contract``        ``forward`` returns an ordered mapping whose keys, channels and ``ceil(H/s)`` sizes
                    are exactly ``feature_info``, at every size of ``sizes`` (odd ones by default)
``output_stride``   each of ``output_strides`` the factory accepts puts the deepest level at that stride
                    (a refusal must be a typed VertebraError; it is reported, not a violation)
``out_indices``     ``out_indices=[0, -1]`` returns exactly the first and last level, of the same specs
``meta``            the factory builds under ``torch.device("meta")`` and that module's meta forward
                    agrees with its ``feature_info`` (the registry's own build check)
``state_dict``      a state dict loads strictly into a second build and gives equal outputs
``freeze``          ``freeze()`` stops gradients of the frozen part and leaves the deepest stage trainable
``checkpointing``   ``set_grad_checkpointing()`` leaves outputs and gradients unchanged
``heads``           every head the registry finds compatible builds, runs in eval (and, with batch 2, in
                    train with a backward pass); a head the registry refuses is reported as refused
``export``          a classifier on the backbone exports with torch.export and matches eager outputs
==================  ===================================================================================

Checks of optional members (``freeze``, ``set_grad_checkpointing``) run only when the backbone has them.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConformanceError, IncompatibleError, InputError, VertebraError
from ..registry import build, build_backbone, list_heads, register_plugin, unregister_plugin
from ..registry._probe import compare_levels, feature_mismatch
from .hookspecs import hookimpl

__all__ = ["check_backbone", "ConformanceReport", "CHECKS"]

CHECKS = ("contract", "output_stride", "out_indices", "meta", "state_dict", "freeze", "checkpointing",
          "heads", "export")
# Checks that run forwards and compare them with feature_info: after a broken contract they would only
# repeat its message, so they are skipped and the one clear violation stands alone.
_NEEDS_CONTRACT = ("output_stride", "out_indices", "meta", "state_dict", "checkpointing", "heads", "export")
_CANDIDATE_PLUGIN, _CANDIDATE = "vertebra_conformance", "candidate"
_HEAD_SIZE = 32  # divisible by 32: every head's size rule holds; the deepest map is 1x1 at stride 32


@dataclass
class ConformanceReport:
    """What :func:`check_backbone` ran: passed checks, what was refused (with the reason), violations."""

    backbone: str
    passed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"conformance of {self.backbone}: {len(self.passed)} passed, {len(self.refused)} refused, "
                 f"{len(self.violations)} violation(s)"]
        lines += [f"  violation: {v}" for v in self.violations] + [f"  refused: {r}" for r in self.refused]
        return "\n".join(lines)


def check_backbone(backbone: str | Callable[..., nn.Module], *, kwargs: Mapping[str, Any] | None = None,
                   sizes: Sequence[tuple[int, int]] = ((67, 45), (33, 97)), output_strides: Sequence[int] = (8, 16, 32),
                   heads: Sequence[str] | None = None, checks: Sequence[str] = CHECKS) -> ConformanceReport:
    """Run the contract battery on a registered backbone name or a factory; raise on any violation.

    Args:
        backbone: a registry name (``"timm:resnet18"``, ``"my_plugin:my_net"``) or a factory
            ``factory(**kwargs) -> nn.Module`` (registered for the run under a throwaway plugin).
        kwargs: options for every build (``{"width": 4}``: a small variant keeps the run fast).
        sizes: ``(H, W)`` inputs for the contract check; odd ones catch ``floor`` vs ``ceil``.
        output_strides: the strides to try; refusals are reported, not violations.
        heads: the heads to try (``None``: every registered head).  Fewer heads, fewer seconds.
        checks: which of :data:`CHECKS` to run.

    Returns:
        a :class:`ConformanceReport` when nothing is violated.

    Raises:
        ConformanceError: listing every violation found (and the report as ``.report``).
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ConformanceError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    if isinstance(backbone, str):
        return _Battery(backbone, dict(kwargs or {}), sizes, output_strides, heads).run(checks)
    if not callable(backbone):
        raise ConformanceError(f"check_backbone takes a registered name or a factory, got {type(backbone).__name__}")
    plugin = type("ConformanceCandidate", (), {"vertebra_register_backbones": staticmethod(
        hookimpl(lambda register: register(_CANDIDATE, backbone)))})
    register_plugin(plugin, _CANDIDATE_PLUGIN)
    try:
        name = f"{_CANDIDATE_PLUGIN}:{_CANDIDATE}"
        return _Battery(name, dict(kwargs or {}), sizes, output_strides, heads,
                        label=getattr(backbone, "__name__", repr(backbone))).run(checks)
    finally:
        unregister_plugin(_CANDIDATE_PLUGIN)


class _Battery:
    def __init__(self, name: str, kwargs: dict[str, Any], sizes, output_strides, heads, label: str | None = None):
        self.name, self.kwargs, self.sizes = name, kwargs, list(sizes)
        self.output_strides, self.heads = list(output_strides), heads
        self.report = ConformanceReport(label or name)

    def run(self, checks: Sequence[str]) -> ConformanceReport:
        try:
            reference = self.build()
        except Exception as exc:  # noqa: BLE001 - nothing else can run; that is the one violation
            self.report.violations.append(f"build: {type(exc).__name__}: {exc}")
            raise self.failure() from exc
        for check in (c for c in CHECKS if c in checks):
            if check in _NEEDS_CONTRACT and "contract" not in self.report.passed and "contract" in checks:
                self.report.refused.append(f"{check}: skipped, the contract check failed")
                continue
            before = len(self.report.violations)
            try:
                getattr(self, f"check_{check}")(reference)
            except Exception as exc:  # noqa: BLE001 - a crash inside a check is that check's violation
                self.report.violations.append(f"{check}: {type(exc).__name__}: {exc}")
            skipped = any(r.startswith(f"{check}: ") for r in self.report.refused)  # e.g. no freeze()
            if len(self.report.violations) == before and not skipped:
                self.report.passed.append(check)
        if self.report.violations:
            raise self.failure()
        return self.report

    def failure(self) -> ConformanceError:
        error = ConformanceError(str(self.report))
        error.report = self.report
        return error

    def build(self, **extra: Any) -> nn.Module:
        torch.manual_seed(0)
        return build_backbone(self.name, **{**self.kwargs, **extra})

    def violate(self, check: str, message: str) -> None:
        self.report.violations.append(f"{check}: {message}")

    # -- the checks ---------------------------------------------------------------------------
    def check_contract(self, module: nn.Module) -> None:
        for height, width in self.sizes:
            problem = contract_problem(module, height, width)
            if problem:
                self.violate("contract", f"at {height}x{width}: {problem}")

    def check_output_stride(self, module: nn.Module) -> None:
        default = max(spec.stride for spec in getattr(module, "all_levels", module.feature_info))
        for stride in self.output_strides:
            if stride == default and "output_stride" not in self.kwargs:
                continue  # the reference build is this one: the contract check covered it
            try:
                dilated = self.build(output_stride=stride)
            except VertebraError as exc:
                self.report.refused.append(f"output_stride={stride}: {exc}")
                continue
            deepest = max(spec.stride for spec in dilated.feature_info)
            if deepest != stride and stride < max(s.stride for s in module.feature_info):
                self.violate("output_stride", f"output_stride={stride} declares its deepest level at stride {deepest}")
            problem = contract_problem(dilated, *self.sizes[0])
            if problem:
                self.violate("output_stride", f"output_stride={stride}: {problem}")

    def check_out_indices(self, module: nn.Module) -> None:
        every = list(getattr(module, "all_levels", module.feature_info))
        chosen = self.build(out_indices=[0, -1])
        want = [every[0], every[-1]] if len(every) > 1 else every
        got = list(chosen.feature_info)
        if [(s.name, s.channels, s.stride) for s in got] != [(s.name, s.channels, s.stride) for s in want]:
            self.violate("out_indices", f"out_indices=[0, -1] declares {_levels(got)}, expected {_levels(want)}")
            return
        problem = contract_problem(chosen, *self.sizes[0])
        if problem:
            self.violate("out_indices", f"out_indices=[0, -1]: {problem}")

    def check_meta(self, module: nn.Module) -> None:
        with torch.device("meta"):
            meta = self.build()
        if any(not p.is_meta for p in meta.parameters()):
            self.violate("meta", "built under torch.device('meta'), some parameters are not on the meta device")
        problem = feature_mismatch(self.name, meta)
        if problem:
            self.violate("meta", problem)

    def check_state_dict(self, module: nn.Module) -> None:
        torch.manual_seed(1)
        other = build_backbone(self.name, **self.kwargs)
        other.load_state_dict(module.state_dict(), strict=True)
        x = torch.randn(1, _in_channels(module), *self.sizes[0])
        with torch.no_grad():
            first, second = module.eval()(x), other.eval()(x)
        for key in first:
            if not torch.allclose(first[key], second[key], atol=1e-5):
                self.violate("state_dict", f"level {key!r} differs after a strict state_dict round trip")

    def check_freeze(self, module: nn.Module) -> None:
        if not callable(getattr(module, "freeze", None)):
            self.report.refused.append("freeze: the backbone has no freeze()")
            return
        backbone = self.build()
        backbone.freeze(1)
        if not any(p.requires_grad for p in backbone.parameters()):
            self.violate("freeze", "freeze(1) froze every parameter, the deeper stages must stay trainable")
        backbone.freeze()
        if all(p.requires_grad for p in backbone.parameters()):
            self.violate("freeze", "freeze() left every parameter trainable")

    def check_checkpointing(self, module: nn.Module) -> None:
        if not callable(getattr(module, "set_grad_checkpointing", None)):
            self.report.refused.append("checkpointing: the backbone has no set_grad_checkpointing()")
            return
        plain = copy.deepcopy(module).eval()
        checkpointed = copy.deepcopy(module).eval()
        checkpointed.set_grad_checkpointing(True)
        x = torch.randn(1, _in_channels(module), *self.sizes[0])
        grads = []
        for candidate in (plain, checkpointed):
            sum(t.float().mean() for t in candidate(x).values()).backward()
            grads.append([p.grad for p in candidate.parameters() if p.grad is not None])
        if len(grads[0]) != len(grads[1]) or any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads)):
            self.violate("checkpointing", "set_grad_checkpointing(True) changes the gradients")

    def check_heads(self, module: nn.Module) -> None:
        for head in self.heads if self.heads is not None else list_heads():
            try:
                model = build(head, backbone={"name": self.name, **self.kwargs}, **_head_options(head))
            except IncompatibleError as exc:
                self.report.refused.append(f"head {head}: {exc}")
                continue
            try:
                problem = run_head(model, _in_channels(module))
            except InputError as exc:     # the head's own input-size rule (PAN: 128 px), not the backbone's fault
                self.report.refused.append(f"head {head}: its input rule refuses the kit's {_HEAD_SIZE}x{_HEAD_SIZE} "
                                           f"images ({exc})")
                continue
            if problem:
                self.violate("heads", f"{head}: {problem}")

    def check_export(self, module: nn.Module) -> None:
        try:
            from ..deploy.export import trace
        except ImportError:
            self.report.refused.append("export: vertebra.deploy is not installed")
            return
        model = build("classifier", backbone={"name": self.name, **self.kwargs}, num_classes=3).eval()
        program = trace(model, example_size=(_HEAD_SIZE, _HEAD_SIZE), dynamic=False)
        x = torch.randn(2, _in_channels(module), _HEAD_SIZE, _HEAD_SIZE)
        with torch.no_grad():
            exported, eager = program.module()(x), model(x)
        if not torch.allclose(exported, eager, atol=1e-4, rtol=1e-4):
            self.violate("export", "the torch.export program's logits differ from the eager model's")


def contract_problem(module: nn.Module, height: int, width: int) -> str | None:
    """Why ``module``'s eval forward of a ``height x width`` batch disagrees with its ``feature_info``."""
    declared = list(module.feature_info)
    x = torch.randn(2, _in_channels(module), height, width)
    training = module.training
    try:
        with torch.no_grad():
            out = module.eval()(x)
    finally:
        module.train(training)
    return compare_levels([(s.name, s.channels, s.stride) for s in declared], out, height, width)


def run_head(model: nn.Module, channels: int) -> str | None:
    """Run a built model in eval and in train (a backward pass); why it failed, else ``None``."""
    detector = "targets" in inspect.signature(model.forward).parameters
    images = torch.rand(2, channels, _HEAD_SIZE, _HEAD_SIZE)
    batch: Any = list(images) if detector else images
    with torch.no_grad():
        model.eval()(batch)
    model.train()
    if detector:
        box = torch.tensor([[4.0, 6.0, 40.0, 50.0]])
        targets = [{"boxes": box, "labels": torch.tensor([1]), "masks": torch.zeros(1, _HEAD_SIZE, _HEAD_SIZE,
                                                                                  dtype=torch.uint8)}] * 2
        losses = model(batch, targets)
        loss = sum(losses.values())
    else:
        out = model(batch)
        loss = sum(t.float().mean() for t in (out.values() if isinstance(out, Mapping) else [out]))
    loss.backward()
    if not any(p.grad is not None for p in model.parameters()):
        return "a backward pass in train mode reached no parameter"
    return None


def _head_options(head: str) -> dict[str, Any]:
    """Small, fast options every head of that kind accepts: 3 classes, detectors at the kit's size."""
    from ..registry import describe

    accepted = describe(head, kind="head").kwargs
    options: dict[str, Any] = {"num_classes": 3} if "num_classes" in accepted else {}
    if "min_size" in accepted:  # torchvision's detectors: small images, a narrow pyramid, few proposals
        small = dict(min_size=_HEAD_SIZE, max_size=_HEAD_SIZE, fpn_channels=32, rpn_pre_nms_top_n_train=64,
                     rpn_post_nms_top_n_train=32, rpn_pre_nms_top_n_test=64, rpn_post_nms_top_n_test=32,
                     box_batch_size_per_image=32)
        options.update({key: value for key, value in small.items() if key in accepted})  # one-stage: no RPN
    return options


def _in_channels(module: nn.Module) -> int:
    return int(getattr(module, "in_channels", 3))


def _levels(specs: Sequence[Any]) -> str:
    return ", ".join(f"{s.name} {s.channels}ch/{s.stride}" for s in specs) or "none"
