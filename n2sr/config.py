"""Every setting's name and default, in one place.

A field here is, under the same name, a key of ``workflow/schemas/config.schema.yaml`` and a
long option of the CLI (``tile_size`` <-> ``--tile-size``); ``tests/test_config.py`` checks the
schema and the CLI against these dataclasses, so the three cannot drift. The classes are
plain data with validation: no torch, no I/O, so any layer may import them.

| class | config section | CLI |
|---|---|---|
| `ModelConfig` | ``train`` (flattened) | ``n2sr train`` |
| `TrainConfig` | ``train`` | ``n2sr train`` |
| `N2VConfig`, `N2SConfig`, `N2NConfig` | ``n2v``, ``n2s``, ``n2n`` | ``n2sr train --n2v-box ...`` |
| `IngestConfig` | ``ingest`` | ``n2sr ingest`` |
| `DenoiseConfig` | ``denoise`` | ``n2sr denoise`` |
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Precision = Literal["auto", "bf16", "fp32"]
Recipe = Literal["auto", "authors", "fast"]
REFERENCE_POLICIES = ("auto", "average", "file", "none")
"""Where a field of view's reference comes from (`n2sr.steps.reference`): a given file, the
average of repeated captures, none (reference-free estimates only), or auto (file if given,
average of t > 1 captures, else none)."""
MULTIPLE = 32  # 2**5: the U-Net's five 2x2 max-poolings; tiles and blocks start on this grid


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the network (see `n2sr.nn.model` for where code and paper differ).

    ``unet_out_channels=None`` means the variant's value (64 code, 256 paper); it is resolved
    on construction so checkpoints store the number, not the rule.
    """

    variant: Literal["code", "paper"] = "code"
    shared_weights: bool = True
    features: int = 48
    final_features: int = 128
    unet_out_channels: int | None = None
    sr_channels: int = 64

    def __post_init__(self) -> None:
        if self.variant not in ("code", "paper"):
            raise ValueError(f"variant must be 'code' or 'paper', not {self.variant!r}")
        if self.unet_out_channels is None:
            object.__setattr__(self, "unet_out_channels", 64 if self.variant == "code" else 256)
        for name in ("features", "final_features", "unet_out_channels", "sr_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters shared by every trained method.

    recipe : "authors" is the paper's setup (16 crops of 128x128, constant Adam 1e-4, no
        averaging), for reproducing it; "fast" is the schedule measured to give the most PSNR
        per CPU-minute (``benchmarks/results/recipe.md``): a linear warm-up over the first
        `warmup` of the budget to a higher peak `lr`, a cosine decay to zero at the end of the
        budget, and an exponential moving average of the weights (`ema`), which is what is
        validated and saved. "auto": fast on the CPU, authors on CUDA. The budget is
        `iterations` and/or `minutes`; the schedule's progress is the larger of the two
        fractions spent, so a run ends at the end of its schedule however long it is.
    batch_size, patch_size, lr : None means the recipe's value (`RECIPES`).
    init : "scratch", or a checkpoint of the same architecture whose weights the run starts
        from (a fresh optimiser); its path and sha256 are recorded in the new checkpoint.
    """

    recipe: Recipe = "auto"
    iterations: int = 2000
    minutes: float | None = None
    batch_size: int | None = None
    patch_size: int | None = None
    lr: float | None = None
    warmup: float = 0.05
    ema: float = 0.995
    init: str = "scratch"
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    augment: bool = False
    normalization: Literal["range", "meanstd"] = "range"
    val_fraction: float = 0.1
    val_every: int = 100
    val_patches: int = 32
    checkpoint_every: int = 100
    stride: int | Literal["auto"] = 2
    whiten: bool | Literal["auto"] = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.recipe not in ("auto", "authors", "fast"):
            raise ValueError(f"recipe must be auto, authors or fast, not {self.recipe!r}")
        if self.patch_size is not None and (self.patch_size < 4 or self.patch_size % 2):
            raise ValueError(f"patch_size must be an even number >= 4, got {self.patch_size}")
        if self.iterations < 1 or self.val_every < 1 or self.checkpoint_every < 1 or (self.batch_size or 1) < 1:
            raise ValueError("iterations, batch_size, val_every and checkpoint_every must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.ema < 1.0:
            raise ValueError(f"warmup and ema must be in [0, 1), got {self.warmup} and {self.ema}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if self.stride not in ("auto", 2, 3, 4):  # n2sr.nn.decorrelate; 2 is the paper's 2x2 sub-sampler
            raise ValueError(f"stride must be 'auto', 2, 3 or 4, got {self.stride!r}")
        if self.whiten not in ("auto", True, False):  # n2sr.nn.whiten
            raise ValueError(f"whiten must be 'auto', true or false, got {self.whiten!r}")
        if self.whiten is True and self.stride not in ("auto", 2):
            raise ValueError(f"whiten: true runs at stride 2 (whitened noise needs no wider stride), not {self.stride}")
        if self.normalization not in ("range", "meanstd"):
            raise ValueError(f"normalization must be 'range' or 'meanstd', not {self.normalization!r}")

    def resolved(self, cuda: bool) -> TrainConfig:
        """This config with the recipe chosen (auto: authors on CUDA, fast elsewhere) and its
        defaults filled in; what a run uses and its checkpoint records."""
        recipe = self.recipe if self.recipe != "auto" else ("authors" if cuda else "fast")
        defaults = RECIPES[recipe]
        return replace(self, recipe=recipe, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


RECIPES: dict[str, dict[str, float | int]] = {
    # the paper's Sec. 2.3 (constant lr: `warmup` and `ema` are not used)
    "authors": {"batch_size": 16, "patch_size": 128, "lr": 1e-4},
    # measured: benchmarks/results/recipe.md
    "fast": {"batch_size": 4, "patch_size": 64, "lr": 2e-3},
}
"""Each recipe's batch size, crop side and (peak) learning rate, used where the config leaves them None."""


@dataclass(frozen=True)
class N2VConfig:
    """Noise2Void blind spots (Krull et al. 2019): one per ``box x box`` cell, each replaced by a
    random other pixel of its ``(2 radius + 1)^2`` window."""

    box: int = 10
    radius: int = 2

    def __post_init__(self) -> None:
        if self.radius < 1:
            raise ValueError(f"n2v radius must be >= 1 (a blind spot needs neighbours to copy), got {self.radius}")
        if self.box <= self.radius + 1:
            raise ValueError(f"n2v box must exceed radius + 1 = {self.radius + 1} so a replacement never "
                             f"copies another blind spot, got {self.box}")


@dataclass(frozen=True)
class N2SConfig:
    """Noise2Self (Batson & Royer 2019): one random phase of a ``grid x grid`` lattice is masked."""

    grid: int = 4

    def __post_init__(self) -> None:
        if self.grid < 3:
            raise ValueError(f"n2s grid must be >= 3 so masked pixels have unmasked neighbours, got {self.grid}")


@dataclass(frozen=True)
class N2NConfig:
    """Noise2Noise: where the pairs of independent captures come from."""

    pairs: Literal["captures"] = "captures"

    def __post_init__(self) -> None:
        if self.pairs != "captures":
            raise ValueError(f"n2n pairs must be 'captures' (consecutive captures of each field of view), "
                             f"not {self.pairs!r}")


METHOD_CONFIGS: dict[str, type] = {"n2v": N2VConfig, "n2s": N2SConfig, "n2n": N2NConfig}
"""Per-method settings: config section and CLI prefix (``--n2v-box``) = the method's name."""


@dataclass(frozen=True)
class IngestConfig:
    """Conversion of raw stacks to OME-Zarr.

    part_size : source pixels per cluster job: the workflow converts a larger TIFF stack by K
        jobs, each writing a run of whole planes (whole chunks) of the same OME-Zarr, and a
        gather job that hashes the source and publishes it (`n2sr.io.parts`); None: one job per
        stack. The output does not depend on K.
    codec : Blosc compressor of the ingested OME-Zarr (always bitshuffled). "lz4" compresses with
        2.8x (noisy 16-bit stacks) to 8.7x (8-bit FMD) less CPU than zstd 5, for 0.7% to 9% more
        bytes (0.606 vs 0.556 of the raw size on FMD); a whole ingest then takes about half the CPU
        and runs twice as fast (with shards), since hashing, reading and writing cost the rest
        (``benchmarks/results/ingest.md``). Readers need no setting: the codec is in the Zarr's metadata.
    clevel : Blosc level of `codec`, 0-9. With zstd on 8-bit FMD captures 1 takes 3.5-4x less CPU
        than 5 for 1.6% more bytes (0.565 vs 0.556 of the raw size); on noisy 16-bit stacks both
        cost the same (``benchmarks/results/ingest.md``).
    shard_mb : MiB of planes per shard file (`omezarr.plane_shards`): a stack's planes are stored in
        runs of this size, one file each, instead of one file per plane, which halves ingest's CPU
        per byte (``benchmarks/results/ingest.md``) and spares cluster file systems; readers see the
        same planes. 0: one file per plane. A plane tiled into several chunks is never sharded.
    """

    part_size: int | None = None
    codec: Literal["zstd", "lz4"] = "zstd"
    clevel: int = 5
    shard_mb: float = 64.0

    def __post_init__(self) -> None:
        if self.part_size is not None and self.part_size < 1:
            raise ValueError(f"part_size must be >= 1 (pixels) or None, got {self.part_size}")
        if not (isinstance(self.clevel, int) and 0 <= self.clevel <= 9):
            raise ValueError(f"clevel must be an integer from 0 to 9, got {self.clevel!r}")
        if self.codec not in ("zstd", "lz4"):
            raise ValueError(f"codec must be zstd or lz4, not {self.codec!r}")
        if isinstance(self.shard_mb, bool) or not (isinstance(self.shard_mb, (int, float)) and self.shard_mb >= 0):
            raise ValueError(f"shard_mb must be a number >= 0 (MiB; 0 = no shards), got {self.shard_mb!r}")


@dataclass(frozen=True)
class DenoiseConfig:
    """Inference settings.

    tile_size : side of the plane region one forward pass is responsible for (a multiple of
        32), or "auto": 1024 on the CPU, on CUDA the largest side whose batch fits in half the
        free device memory (whole planes where they fit). A retried job (``attempt`` > 1) uses
        half the size per retry.
    overlap : context each tile and block gets beyond its region, in input pixels, rounded up
        to 32 by `n2sr.nn.tiling.overlap_pixels`; "exact": the network's receptive field and
        deterministic convolutions, which make tiled output equal whole-plane output bit for bit
        on the CPU, at a cost in time (`n2sr.nn.inference`). The default is the smallest overlap whose
        tiled output stayed within 0.01 dB PSNR of whole-plane output on real FMD planes
        (``benchmarks/results/overlap.md``).
    downsample : how the 2x output returns to the input grid. ``avgpool`` (2x2 mean) is exact
        and shift-invariant; ``bilinear`` is the authors' ``F.interpolate(scale_factor=0.5,
        mode="bilinear", align_corners=True)``, evaluated on whole-plane coordinates.
    block_size : side of the region read, computed and written at once when streaming a Zarr
        stack, rounded to whole chunks; with `prefetch` it sets peak memory.
    batch_pixels : input pixels per forward pass (tiles of several planes go together);
        None: 1 Mpx on the CPU, on CUDA what fits in half the free device memory.
    prefetch : blocks read ahead (and written behind) while one is computed.
    dtype : "float32", or "input": the input's dtype, integers rounded half up and clipped to
        its range (a uint16 archive then stays uint16 instead of quadrupling in size).
    compile : "auto" compiles the network (fixed tile shape, one graph per job) on CUDA for
        jobs of at least 8 gigapixels, where the compile time pays back; "always", "never".
    cuda_graphs : with compile on CUDA, replay CUDA graphs (``mode="reduce-overhead"``).
    ensemble : 1, or 8: average the outputs for the 8 flips and 90-degree rotations of the input
        (self-ensemble) at 8x the cost. Measured on held-out FMD frames it gains only 0.07-0.09 dB
        (issue 13), so it is off by default.
    part_size : input pixels per cluster job of a scattered denoise and evaluation: the
        workflow splits a larger stack into K parts (runs of whole blocks, whole captures for
        the evaluation; `n2sr.io.parts`) and gathers them; None: one job per stack. The output
        does not depend on K.
    pyramid : Zarr outputs whose plane is larger than this (pixels, either side) get NGFF
        multiscale levels, each the 2x2 mean of the one above, down to at most this side, so
        viewers open them at any size (`n2sr.io.pyramid`); 0: level 0 only.
    estimate_draws : reference-free quality estimates of every output plane (`n2sr.estimate`):
        Monte-Carlo SURE (one extra pass) and the Theorem-1 held-out loss averaged over this
        many random sub-samplings or masks (each a pass at half size for Noise2SR, full size for
        N2V/N2S); 0 computes neither. Not computed for a scattered (``part_size``) stack.
    estimate_pixels : a larger plane is estimated on 4 crops spread over it totalling about this
        many pixels, each with the block context around it (`n2sr.regions.crops`), so the
        estimates cost about as much whatever the plane's size; 0: the whole plane (not None,
        which a workflow option cannot pass on). The estimates record the pixels they were
        computed on (CSV column ``est_pixels``).
    """

    tile_size: int | Literal["auto"] = "auto"
    overlap: int | Literal["exact"] = 32
    downsample: Literal["avgpool", "bilinear"] = "avgpool"
    block_size: int = 2048
    batch_pixels: int | None = None
    prefetch: int = 2
    dtype: Literal["float32", "input"] = "float32"
    compile: Literal["auto", "always", "never"] = "auto"
    cuda_graphs: bool = False
    ensemble: Literal[1, 8] = 1
    device: str = "auto"
    precision: Precision = "auto"
    part_size: int | None = None
    pyramid: int = 1024
    estimate_draws: int = 4
    estimate_pixels: int = 262144

    def __post_init__(self) -> None:
        tile = self.tile_size
        if tile != "auto" and (not isinstance(tile, int) or tile < MULTIPLE or tile % MULTIPLE):
            hint = f"; use {-(-max(tile, 1) // MULTIPLE) * MULTIPLE}" if isinstance(tile, int) else ""
            raise ValueError(f"tile_size must be 'auto' or a positive multiple of {MULTIPLE}, got {tile!r}{hint}")
        if self.overlap != "exact" and (not isinstance(self.overlap, int) or self.overlap < 0):
            raise ValueError(f"overlap must be 'exact' or an integer >= 0, got {self.overlap!r}")
        if self.overlap == "exact" and self.compile == "always":
            raise ValueError("overlap 'exact' runs deterministic kernels, which cannot be compiled; "
                             "use compile 'auto' or 'never'")
        for name, allowed in (("downsample", ("avgpool", "bilinear")), ("dtype", ("float32", "input")),
                              ("compile", ("auto", "always", "never"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.ensemble not in (1, 8):
            raise ValueError(f"ensemble must be 1 or 8, not {self.ensemble!r}")
        if self.block_size < 1 or self.prefetch < 0 or (self.batch_pixels is not None and self.batch_pixels < 1):
            raise ValueError("block_size and batch_pixels must be >= 1 and prefetch >= 0")
        if self.estimate_draws < 0:
            raise ValueError(f"estimate_draws must be >= 0, got {self.estimate_draws}")
        if self.estimate_pixels < 0:
            raise ValueError(f"estimate_pixels must be >= 0 (0: the whole plane), got {self.estimate_pixels}")
        if self.part_size is not None and self.part_size < 1:
            raise ValueError(f"part_size must be >= 1 (pixels) or None, got {self.part_size}")
        if self.pyramid != 0 and self.pyramid < 16:
            raise ValueError(f"pyramid must be 0 (none) or >= 16 (pixels), got {self.pyramid}")
