"""A small, resumable training loop shared by the autoencoder, image and mask trainers.

State lives in one folder: ``weights.safetensors`` (online weights), ``ema.safetensors`` (the EMA that is
shipped and sampled), ``optimizer.safetensors`` + ``state.json`` (Adam moments, step, config), ``log.csv``
(loss per step) and ``samples-<step>.png``; a companion network trained beside the main one (the decoder's
discriminator) adds ``<name>.safetensors`` and ``<name>-optimizer.safetensors``. Every file is written to a
temp file and renamed, so a run killed at any moment resumes from its last checkpoint. No pickles.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .._atomic import atomic_save_tensors, atomic_write_text


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.999
    save_every: int = 200
    sample_every: int = 1000
    grad_clip: float = 1.0
    seed: int = 0
    extra: dict = field(default_factory=dict)  # kind-specific settings, saved in state.json


def _adam_moments(opt: torch.optim.Optimizer, params) -> dict[str, torch.Tensor]:
    moments = {}
    for i, p in enumerate(params):
        st = opt.state.get(p)
        if st:
            moments[f"{i}.exp_avg"] = st["exp_avg"]
            moments[f"{i}.exp_avg_sq"] = st["exp_avg_sq"]
    return moments


def _load_adam_moments(opt: torch.optim.Optimizer, params, path: Path, step: int) -> None:
    moments = load_file(str(path))
    for i, p in enumerate(params):
        if f"{i}.exp_avg" in moments:
            opt.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": moments[f"{i}.exp_avg"].to(p.device),
                "exp_avg_sq": moments[f"{i}.exp_avg_sq"].to(p.device),
            }


class Trainer:
    """Adam with warmup and cosine decay, gradient clipping, an EMA of the weights, checkpoints in ``out``.

    ``companions``: other networks with their own optimizers that the loss function trains itself (a
    discriminator); they are saved and resumed with the run, so a resumed adversarial run goes on as it was.
    """

    def __init__(
        self,
        net: nn.Module,
        out: Path,
        config: TrainConfig,
        metadata: dict[str, str],
        companions: dict[str, tuple[nn.Module, torch.optim.Optimizer]] | None = None,
    ):
        self.companions = dict(companions or {})
        self.net = net
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.metadata = metadata
        self.ema = copy.deepcopy(net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.99))
        self.step = 0
        self.elapsed = 0.0
        if (self.out / "state.json").exists():
            self._resume()

    # checkpoints ------------------------------------------------------------------------------------------
    def _resume(self):
        state = json.loads((self.out / "state.json").read_text())
        if state.get("metadata") != self.metadata:
            raise ValueError(
                f"{self.out} holds a run with different settings ({state.get('metadata')}); "
                "use another output folder or the same settings to resume"
            )
        self.net.load_state_dict(load_file(str(self.out / "weights.safetensors")))
        self.ema.load_state_dict(load_file(str(self.out / "ema.safetensors")))
        _load_adam_moments(
            self.opt, list(self.net.parameters()), self.out / "optimizer.safetensors", state["step"]
        )
        for name, (module, opt) in self.companions.items():
            if not (self.out / f"{name}.safetensors").exists():
                raise ValueError(
                    f"{self.out} has no {name}.safetensors: it was trained without a {name}; "
                    "resume with the same settings, or train into a new run folder"
                )
            module.load_state_dict(load_file(str(self.out / f"{name}.safetensors")))
            _load_adam_moments(
                opt, list(module.parameters()), self.out / f"{name}-optimizer.safetensors", state["step"]
            )
        self.step = state["step"]
        self.elapsed = state.get("elapsed_s", 0.0)

    def save(self):
        meta = {**self.metadata}
        atomic_save_tensors(self.out / "weights.safetensors", self.net.state_dict(), meta)
        atomic_save_tensors(self.out / "ema.safetensors", self.ema.state_dict(), meta)
        moments = _adam_moments(self.opt, self.net.parameters())
        atomic_save_tensors(self.out / "optimizer.safetensors", moments)
        for name, (module, opt) in self.companions.items():
            atomic_save_tensors(self.out / f"{name}.safetensors", module.state_dict())
            atomic_save_tensors(
                self.out / f"{name}-optimizer.safetensors", _adam_moments(opt, module.parameters())
            )
        state = {
            "step": self.step,
            "elapsed_s": round(self.elapsed, 1),
            "metadata": self.metadata,
            "config": {k: v for k, v in vars(self.config).items()},
        }
        atomic_write_text(self.out / "state.json", json.dumps(state, indent=1))

    # the loop ---------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        progress = min(1.0, (step - c.warmup) / max(1, c.steps - c.warmup))
        return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    @torch.no_grad()
    def _update_ema(self):
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def run(self, loss_fn: Callable[[nn.Module], dict[str, torch.Tensor]], sample_fn=None, progress=True):
        """Train until ``config.steps``; ``loss_fn(net)`` draws a batch and returns {"loss": ..., other logs}."""
        import signal
        import threading

        from tqdm import tqdm

        if threading.current_thread() is threading.main_thread():
            # `kill` (SIGTERM) checkpoints and stops like Ctrl-C; background jobs ignore SIGINT
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, dynamic_ncols=True)
        with open(log_path, "a", newline="") as log_file:
            log = csv.writer(log_file)
            try:
                while self.step < self.config.steps:
                    t0 = time.perf_counter()
                    for group in self.opt.param_groups:
                        group["lr"] = self.lr_at(self.step)
                    self.net.train()
                    terms = loss_fn(self.net)
                    self.opt.zero_grad(set_to_none=True)
                    terms["loss"].backward()
                    nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
                    self.opt.step()
                    self._update_ema()
                    self.step += 1
                    self.elapsed += time.perf_counter() - t0
                    values = {k: float(v.detach()) for k, v in terms.items()}
                    if new_log:
                        log.writerow(["step", "lr", "elapsed_s", *values])
                        new_log = False
                    log.writerow(
                        [
                            self.step,
                            f"{self.lr_at(self.step - 1):.3g}",
                            f"{self.elapsed:.1f}",
                            *(f"{v:.5g}" for v in values.values()),
                        ]
                    )
                    bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
                    bar.update(1)
                    if self.step % self.config.save_every == 0 or self.step == self.config.steps:
                        log_file.flush()
                        self.save()
                    if sample_fn is not None and (
                        self.step % self.config.sample_every == 0 or self.step == self.config.steps
                    ):
                        sample_fn(self.ema, self.out / f"samples-{self.step:06d}.png")
            except KeyboardInterrupt:
                log_file.flush()
                self.save()
                bar.close()
                raise
        bar.close()
        return self.ema
