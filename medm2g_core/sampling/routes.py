"""Which guided directions a model has, and how to get from any modality to any other through them.

The multi-flow rounds (paper 3.5, :data:`~medm2g_core.vocabulary.CROSS_ROUNDS`) train guidance between
text and X-ray, text and CT, and CT and MRI, both ways. Every other direction goes through the modalities in
between, as the multi-flow design intends (CT bridges text and MRI): MRI -> X-ray is MRI -> CT -> text ->
X-ray. :func:`route` gives the shortest such path; :func:`hop` generates one step of it: the target's latents
denoised under the guide's context (Eq. 6, the guide clean), with classifier-free guidance.
A step's output is decoded and encoded again to guide the next step, as a user chaining commands would.

Image-to-image flows between CT and MRI take the spatial path instead when the model has it (``spatial_ct``,
``spatial_mri`` from the spatial round): one hop straight to the target, whatever the sources (MRI -> CT,
CT -> MRI, any subset of contrasts -> another contrast), the sources' latents at the denoiser's input and V_B of
the first source in its cross-attention (:func:`spatial_hop`). A hop between text and X-ray takes the report
round's guided copy (``guided_text``, ``guided_xray``; ``guided_ct`` from text: the guide also pooled into the
timestep embedding), read through the round's context encoder copy (``guided_context_xray``,
``guided_context_text``), when the model has them (:func:`hop_denoiser`).
"""

from collections import deque
from collections.abc import Callable
from dataclasses import replace

import torch

from medm2g_core.errors import InputError
from medm2g_core.models.medm2g import MedM2G
from medm2g_core.models.sampler import SamplingConfig, Stream, sample
from medm2g_core.models.spatial_guide import fill_slots, slab, slot_of, spatial_input
from medm2g_core.sampling.guides import (
    Guide,
    decode_images,
    decode_reports,
    guide_context,
    image_guide,
    require,
    text_guide,
)
from medm2g_core.vocabulary import (
    CROSS_ROUNDS,
    MODALITIES,
    MRI_CONTRASTS,
    REPORT_GUIDANCE,
    SPATIAL_MRI_ETA,
    SPATIAL_SCHEDULER,
)

EDGES = tuple(tuple(kind.split("-")) for kind in CROSS_ROUNDS)  # each round's pair, trained both ways
GUIDED_HOPS = (("xray", "text"), ("text", "xray"), ("text", "ct"))  # (source, target) of the report round's copies


def route(source: str, target: str) -> list[str]:
    """The modalities from ``source`` to ``target`` along trained directions, both ends included."""
    for name in (source, target):
        if name not in MODALITIES:
            raise InputError(f"unknown modality {name!r}; use one of {', '.join(MODALITIES)}")
    if source == target and source != "mri":
        raise InputError(f"source and target are both {source}; nothing to translate")
    start = [source] if source != target else [source, "ct"]  # one MRI contrast to another goes through CT
    paths = deque([start])
    while paths:
        path = paths.popleft()
        if path[-1] == target and len(path) > 1:
            return path
        for a, b in EDGES:
            for here, there in ((a, b), (b, a)):
                if here == path[-1] and (there not in path or there == target):
                    paths.append([*path, there])
    raise InputError(f"no trained path from {source} to {target}")


def latent_shape(model: MedM2G, modality: str, batch: int) -> tuple[int, ...]:
    denoiser = model[f"denoiser_{modality}"]
    if modality == "text":
        return (batch, denoiser.config.latent_dim)
    side = denoiser.config.sample_size
    return (batch, denoiser.config.in_channels, side, side)


def hop_denoiser(model: MedM2G, source: str, target: str) -> tuple[str, str]:
    """The denoiser and the guide's context encoder of one hop: the report round's copies (X-ray -> text,
    text -> X-ray, text -> CT) when the model has them, else the paper's."""
    guided = (f"guided_{target}", f"guided_context_{source}")
    if (source, target) in GUIDED_HOPS and all(name in model for name in guided):
        return guided
    return f"denoiser_{target}", f"context_encoder_{source}"


@torch.inference_mode()
def hop(
    model: MedM2G, guides: list[tuple[str, Guide]], target: str, config: SamplingConfig,
    generators: list[torch.Generator], contrast: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The scaled latents [B, ...] of ``target`` guided by clean guides [(modality, Guide [B, ...])]; several guides
    (e.g. MRI contrasts) have their context tokens concatenated."""
    name, encoder = hop_denoiser(model, guides[0][0], target)  # every guide of a hop is of one modality
    require(model, name, "scheduler", encoder)
    denoiser = model[name]
    device = denoiser.device
    batch = len(generators)
    context = torch.cat([guide_context(model, m, g.latent.to(device), g.prompt.to(device), 0, generators, encoder)
                         for m, g in guides], dim=1)  # [B, sum L, D]
    stream = Stream(denoiser, latent_shape(model, target, batch), lambda t, latents: context,
                    None if contrast is None else contrast.to(device),
                    guidance=REPORT_GUIDANCE if name.startswith("guided_") else None)
    return sample({target: stream}, model["scheduler"], config, generators, device, progress)[target]


@torch.inference_mode()
def refine(
    model: MedM2G, modality: str, start: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator],
    strength: float, progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Scaled latents [B, ...] of ``modality`` made from clean latents ``start`` [B, ...] by the unconditional
    denoiser over the last ``strength`` of the schedule (SDEdit): the start's layout, the modality's look."""
    require(model, f"denoiser_{modality}", "scheduler")
    denoiser = model[f"denoiser_{modality}"]
    device = denoiser.device
    context = denoiser.null(len(generators))
    stream = Stream(denoiser, latent_shape(model, modality, len(generators)), lambda t, latents: context)
    return sample({modality: stream}, model["scheduler"], replace(config, guidance=1.0), generators, device, progress,
                  start={modality: start}, strength=strength)[modality]


def has_spatial_path(model: MedM2G, guides: list[tuple[str, Guide]], target: str, contrast: int | None) -> bool:
    """Whether ``target`` can be made from these guides in one spatial hop (an MRI target needs its contrast)."""
    return (f"spatial_{target}" in model and all(m in ("ct", "mri") for m, _ in guides)
            and (target == "ct" or bool(contrast)))


def slot_latents(guide: Guide, neighbours: int) -> torch.Tensor:
    """What a guide puts in its spatial slot: its latent [B, C, h, w], or in 2.5D its slab [B, (2n+1) C, h, w] (a
    guide without one, a lone slice, stands for its own neighbours)."""
    if not neighbours:
        return guide.latent
    return slab(guide.latent, neighbours) if guide.slab is None else guide.slab


@torch.inference_mode()
def spatial_hop(
    model: MedM2G, guides: list[tuple[str, Guide]], target: str, config: SamplingConfig,
    generators: list[torch.Generator], contrast: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The scaled latents [B, ...] of ``target`` with the guides' latents in the spatial path of ``spatial_<target>``
    and, when the model has V_B for the first guide, its context in the cross-attention (else the null context)."""
    require(model, f"spatial_{target}", "scheduler")
    denoiser = model[f"spatial_{target}"]
    device = denoiser.device
    batch = len(generators)
    named = [(slot_of(m, g.contrast), slot_latents(g, denoiser.config.spatial_neighbours).to(device))
             for m, g in guides]
    names = [name for name, _ in named]
    if len(set(names)) < len(names):
        raise InputError(f"two inputs fill the same slot ({', '.join(names)}); give each contrast once")
    if target == "mri" and contrast and MRI_CONTRASTS[contrast - 1] in names:
        raise InputError(f"the target contrast {MRI_CONTRASTS[contrast - 1]} is one of the inputs")
    spatial = spatial_input(target, *fill_slots(target, named))  # [B, S, h, w]
    first, guide = guides[0]
    if f"context_encoder_{first}" in model:
        context = guide_context(model, first, guide.latent.to(device), guide.prompt.to(device), 0, generators)
    else:
        context = denoiser.null(batch)
    labels = torch.full((batch,), contrast, dtype=torch.long, device=device) if target == "mri" else None
    schedule = model.get(SPATIAL_SCHEDULER)  # the spatial path's zero terminal SNR schedule, if trained so
    eta = SPATIAL_MRI_ETA if target == "mri" and schedule is None else None  # eps-trained MRI copies: eta 0
    stream = Stream(denoiser, latent_shape(model, target, batch), lambda t, latents: context, labels, spatial,
                    eta=eta, schedule=schedule)
    return sample({target: stream}, model["scheduler"], config, generators, device, progress)[target]


def regrow(model: MedM2G, modality: str, latents: torch.Tensor) -> Guide:
    """An intermediate of a route as the next guide: decoded, then encoded as an input would be."""
    if modality == "text":
        return text_guide(model, decode_reports(model, latents))
    return image_guide(model, modality, decode_images(model, latents))


@torch.inference_mode()
def follow(
    model: MedM2G, guides: list[tuple[str, Guide]], target: str, config: SamplingConfig,
    generators: list[torch.Generator], contrast: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The latents [B, ...] of ``target`` from guides of one source modality, hop by hop along :func:`route`;
    ``contrast`` labels an MRI target (intermediate MRI has none); ``progress`` follows the last hop. CT and MRI
    targets from CT/MRI guides take the spatial path when the model has it."""
    if has_spatial_path(model, guides, target, contrast):
        return spatial_hop(model, guides, target, config, generators, contrast, progress)
    path = route(guides[0][0], target)
    for number, modality in enumerate(path[1:]):
        final = number == len(path) - 2
        labels = None
        if modality == "mri":
            labels = torch.full((len(generators),), contrast if final and contrast is not None else 0, dtype=torch.long)
        latents = hop(model, guides, modality, config, generators, labels, progress if final else None)
        if final:
            return latents
        guides = [(modality, regrow(model, modality, latents))]
    raise AssertionError("a route has at least two modalities")
