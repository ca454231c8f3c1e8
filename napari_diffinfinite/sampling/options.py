"""How the image model samples, as one value: :class:`SamplingOptions`.

``generate()``, the canvas scheduler and the distributed tasks each build one and hand it down to
:func:`~napari_diffinfinite.sampling.blocks.generate_block`; exports and canvases record it. A setting therefore
has one name, one default and one check, and no path can drop one on the way down. No torch at import: the
coordinator of a distributed run builds one without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..model_manifest import SAMPLER_LABELS

#: Latents sampled beyond a block's sides that have no context yet, and then thrown away. A network's output at
#: the edge of its window differs from its output inside (zero padding), and a neighbour generated later has
#: to continue those edge latents: sampling past the edge moves that edge out of the block. Measured on the
#: embedded model (benchmarks/context_seams.py) it lowers the seam ratio of a later join by about 0.06.
LOOKAHEAD = 8

MODES = ("batched", "faithful")


@dataclass(frozen=True)
class SamplingOptions:
    """The image model's sampling settings.

    steps: diffusion steps. omega: classifier-free guidance (0: none). sampler: one of
    ``model.diffusion.SAMPLERS``. mode: ``"batched"`` or the reference's ``"faithful"`` (see
    :mod:`~.random_patch`). window: sampling window in latents. halo: latents of context read around a block.
    lookahead: :data:`LOOKAHEAD`. max_batch: network rows per forward pass (memory, not results).
    """

    steps: int = 50
    omega: float = 3.0
    sampler: str = "ddim"
    mode: str = "batched"
    window: int = 64
    halo: int = 16
    lookahead: int = LOOKAHEAD
    max_batch: int = 64

    def __post_init__(self):
        if (
            self.sampler not in SAMPLER_LABELS
        ):  # model.diffusion.check_sampler's test, without importing torch
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLER_LABELS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("steps", "window", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("halo", "lookahead"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")

    @classmethod
    def for_model(cls, model, **settings: Any) -> SamplingOptions:
        """The model's defaults (steps, guidance, sampler, training window) with every setting given that is not
        None in their place."""
        base = cls(
            steps=int(model.default_steps),
            omega=float(model.default_omega),
            sampler=model.sampler,
            window=int(model.window),
        )
        return base.replaced(**settings)

    def replaced(self, **settings: Any) -> SamplingOptions:
        """A copy with the settings given (None: keep this one's)."""
        unknown = set(settings) - set(asdict(self))
        if unknown:
            raise TypeError(f"unknown sampling setting(s): {', '.join(sorted(unknown))}")
        types = {"omega": float, "sampler": str, "mode": str}
        given = {k: types.get(k, int)(v) for k, v in settings.items() if v is not None}
        return replace(self, **given)

    def recorded(self) -> dict[str, Any]:
        """What exports and canvases record: every setting that changes the result (not ``max_batch``)."""
        out = asdict(self)
        del out["max_batch"]
        return out

    def stepper(self, net):
        """The window stepper of the image UNet ``net`` with these settings."""
        from ..model.diffusion import cosine_schedule
        from .steppers import ImageStepper

        return ImageStepper(
            net, cosine_schedule(), self.omega + 1, max_batch=self.max_batch, sampler=self.sampler
        )
