"""`SegmentationModel`: DeepLabV3+ with an injected loss, SGD + poly, per-class IoU.

What it logs: `train/loss`, `train/miou`, `train/iou/<class>` (accumulated over each epoch on the
training crops), `val/loss`, `val/miou`, `val/iou/<class>` and the same under `test/`. IoU is
data-set-level (one confusion matrix summed over the whole split); classes absent from both
the predictions and the ground truth are NaN and left out of the mean.

A loss made of terms (`tailseg.losses.Sum`) says so through one attribute, `term_values`: {term name: the term's
unweighted value at the loss's last call}, with its keys fixed when the loss is built. Each term is then logged
beside the loss: `train/loss/<name>` at every logged step (the values of the step, as `train/loss`), and
`val/loss/<name>`, `test/loss/<name>` as the mean over the images, kept like `val/loss` in a `MeanMetric` per
term (synced over the DDP ranks, not saved in checkpoints), so that the weighted sum of the logged terms is the
logged loss. Losses without `term_values` log only their total.

Every validation and test also keeps each image's data-set index and per-class intersection and union pixel
counts (`tailseg.metrics.PerImageCounts`, gathered over the DDP ranks), in `latest_per_image`, which the
report's per-image counts and bootstrap intervals are made of (`tailseg.callbacks.report`).

Class statistics reach a loss through one channel: if the loss defines
`set_class_statistics(counts)`, the model's `setup` calls it with the DataModule's (N, C)
`class_pixel_counts` table (as a tensor) when fitting, and when evaluating without a checkpoint while
the training set is configured. What the loss derives from the table (its class-weight buffers) is
saved with the weights, and so is the training set's class pixel share (`class_frequency`, for the
reports): evaluating a checkpoint reads neither the training set nor its statistics.

Every validation's per-class IoU is kept by its global step in `val_history` (the report's mean of the last k
validations, `miou_last_k`, is made of it).

Checkpoints: `tailseg.resume` lists what a checkpoint holds beyond the weights. The model's part is the
training confusion matrix of the epoch so far (a persistent state of `iou.train_iou`, so that an epoch
interrupted and resumed still measures its training IoU over all its crops; under DDP summed over the ranks
when saved and kept by rank 0 alone when loaded), `class_frequency` and `val_history` (so that a resumed run's
last k validations include those before the interruption).

Fine-tuning: `init_from` names a file whose network weights (all, or the `init_from_modules` among encoder,
decoder, segmentation_head) a fit from scratch starts from (`tailseg.init_weights`: what is read and loaded,
the head of another number of classes, errors). It is loaded in `on_fit_start` only when the fit resumes no
checkpoint (`trainer.ckpt_path` is None there); a resumed fit, `validate`, `test` and `predict` take the
weights from their checkpoint and never read the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from tailseg import init_weights
from tailseg.inference import Tiling
from tailseg.lightning_compat import batches_done_in_epoch, set_logging_step
from tailseg.losses import CrossEntropy
from tailseg.losses.common import in_float32
from tailseg.metrics import ClassIoU, PerImageCounts
from tailseg.optim import PolyLR

STAGES = ("train", "val", "test")


def _zero_train_iou(state_dict: dict) -> None:
    """Empty the training IoU's persistent state (confusion matrix, image count) in a checkpoint's state_dict."""
    for key in ("iou.train_iou.confusion", "iou.train_iou.num_images"):
        if key in state_dict:
            state_dict[key] = torch.zeros_like(state_dict[key])


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the batch's samples."""


class SegmentationModel(pl.LightningModule):
    """DeepLabV3+ (segmentation-models-pytorch) trained with a pluggable loss.

    Args:
        num_classes: Number of classes (linked from the DataModule by the CLI).
        class_names: Names of the classes, for metric keys (linked from the DataModule).
        ignore_index: Label of void pixels (linked from the DataModule).
        encoder_name: smp encoder, e.g. "resnet101" (the papers), "resnet18", "mobilenet_v2".
        encoder_weights: Pre-trained encoder weights, e.g. "imagenet" (needs a network the first
            time), or None for random initialisation.
        encoder_output_stride: 8 or 16.
        decoder_atrous_rates: The ASPP's three atrous rates.
        decoder_channels: Width of the decoder.
        loss: The training loss, `loss(logits, target) -> scalar`; default cross-entropy. `tailseg.losses.Sum`
            makes a weighted sum of losses, whose terms are logged one by one (`term_values`, module docs).
        optimizer: A factory `params -> Optimizer`; default SGD(lr=0.01, momentum=0.9,
            weight_decay=1e-4).
        lr_scheduler: A factory `(optimizer, total_steps) -> LRScheduler`, stepped every step;
            default `PolyLR(power=0.9)` over `trainer.estimated_stepping_batches`.
        tiling: How validation, test and prediction see an image: `Tiling(mode="whole")` (default),
            "efficient", "optimized" or "slide" (`tailseg.inference.Tiling`). Its `pad_to` is raised
            to a multiple of the encoder's output stride, which DeepLabV3+ needs.
        channels_last: Keep the network's weights and inputs in the channels-last (NHWC) memory layout. On
            GPUs with tensor cores (Volta and later), convolutions under mixed precision run in NHWC, so this
            saves the layout conversions around each of them; on CPUs it rarely helps. Off by default.
        compile: Compile the network with `torch.compile` (in place: parameter names and checkpoints are
            unchanged). The first steps are slow while it compiles (tens of seconds to minutes, again for every
            new input size, e.g. validation images); after that, fused kernels save time per step on GPUs.
            Needs a C++ compiler on CPUs. Off by default.
        init_from: A file to start training from (fine-tuning): a tailseg / Lightning checkpoint (its `state_dict`,
            keys `net.*`) or a state dict of the network (`torch.save(model.net.state_dict())`). Weights only: the
            optimizer, schedule, sampler and step start afresh. Applied only when `fit` resumes no checkpoint;
            not read when the model is built (see `tailseg.init_weights`).
        init_from_modules: Which of the network's modules `init_from` loads: "encoder", "decoder",
            "segmentation_head" (None: all three); the others keep their fresh initialisation. A head of
            another number of classes is not loaded (a warning names the shapes).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_output_stride: int = 16,
        decoder_atrous_rates: tuple[int, int, int] = (12, 24, 36),
        decoder_channels: int = 256,
        loss: nn.Module | None = None,
        optimizer: Callable[[object], Optimizer] | None = None,
        lr_scheduler: Callable[[Optimizer, int], LRScheduler] | None = None,
        tiling: Tiling | None = None,
        channels_last: bool = False,
        compile: bool = False,
        init_from: str | None = None,
        init_from_modules: list[str] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"SegmentationModel: num_classes must be >= 2, got {num_classes}")
        if encoder_output_stride not in (8, 16):
            raise ValueError(f"SegmentationModel: encoder_output_stride must be 8 or 16, got {encoder_output_stride}")
        names = list(class_names) if class_names is not None else [f"class_{c}" for c in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"SegmentationModel: {len(names)} class_names for num_classes={num_classes}")
        self.init_from, self.init_from_modules = init_from, init_weights.check_modules(init_from_modules)
        self._init_from_weights: dict[str, torch.Tensor] | None = None  # read and checked, not loaded yet
        self.save_hyperparameters(ignore=["loss"] if loss is None else [])
        self.class_names, self.ignore_index = names, int(ignore_index)
        self.net = smp.DeepLabV3Plus(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            encoder_output_stride=encoder_output_stride,
            decoder_atrous_rates=tuple(decoder_atrous_rates),
            decoder_channels=decoder_channels,
            classes=num_classes,
        )
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        self.loss = loss if loss is not None else CrossEntropy(ignore_index=ignore_index)
        loss_ignore = getattr(self.loss, "ignore_index", self.ignore_index)
        if loss_ignore != self.ignore_index:
            raise ValueError(
                f"SegmentationModel: the loss's ignore_index ({loss_ignore}) differs from the data's ({self.ignore_index}); "
                "set model.loss.init_args.ignore_index to match (for a tailseg.losses.Sum, that of each term)"
            )
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        if optimizer is not None:  # a wrong value (e.g. a negative lr) stops here, not at the start of training
            try:
                optimizer([nn.Parameter(torch.zeros(1))])
            except (ValueError, TypeError) as error:
                raise ValueError(f"model.optimizer: {error}") from error
        self.tiling = tiling if tiling is not None else Tiling("whole")
        self.tiling.pad_to = math.lcm(self.tiling.pad_to, int(self.net.encoder.output_stride))
        # ModuleDict keys may not shadow nn.Module attributes ("train"), hence the suffix.
        self.iou = nn.ModuleDict({f"{s}_iou": ClassIoU(num_classes, ignore_index) for s in STAGES})
        self.iou["train_iou"].persistent(True)  # the epoch's confusion so far travels in checkpoints
        # Per-image counts of validation and test (not persistent: nothing of them travels in checkpoints).
        self.per_image = nn.ModuleDict(
            {f"{s}_per_image": PerImageCounts(num_classes, ignore_index) for s in STAGES[1:]}
        )
        self.latest_iou: dict[str, torch.Tensor] = {}
        self.latest_iou_step: dict[str, int] = {}  # the global step each latest IoU was measured at
        self.latest_num_images: dict[str, int] = {}  # how many images each latest IoU covers (all ranks)
        # (index, intersection, union) of each latest IoU's images, all ranks, sorted by index (val, test)
        self.latest_per_image: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.class_frequency: list[float] | None = None  # training pixel share per class (for reports)
        self.class_frequency_source: str | None = None  # "training set" or "checkpoint"
        self.checkpoint_step: int | None = None  # the global step of the checkpoint loaded, if any
        # {global step: per-class IoU (fractions, NaN where a class has none)} of every validation so far
        self.val_history: dict[int, list[float]] = {}
        # val/test loss: a mean over images that torchmetrics syncs over the ranks (Lightning's own mean of
        # logged values would weigh ranks with fewer images like the others)
        self.eval_loss = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("val", "test")})
        # the same for each term of a loss made of terms (`term_values`), keyed "<stage>_<term name>"
        self.eval_loss_terms = nn.ModuleDict(
            {f"{s}_{name}": MeanMetric() for s in ("val", "test") for name in self._loss_terms()}
        )

    def _loss_terms(self) -> dict[str, torch.Tensor | None]:
        """The loss's `term_values` ({term name: its value at the last call}); {} for a loss without terms."""
        return dict(getattr(self.loss, "term_values", None) or {})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "train_set", None) is None:
            return  # evaluation without the training set: the checkpoint brings what was learned from it
        # Also before an evaluation from a checkpoint: Lightning restores the checkpoint after `setup` (its
        # `trainer.ckpt_path` is not set yet here), so the loss's class weights are then the checkpoint's.
        setter = getattr(self.loss, "set_class_statistics", None)
        if callable(setter):
            setter(torch.as_tensor(datamodule.class_pixel_counts))
        self.class_frequency = [float(f) for f in datamodule.class_frequency]
        self.class_frequency_source = "training set"

    def prepare_init_from(self) -> None:
        """Read `init_from` and check it against the network (ValueError naming the file and the keys that do not
        fit; the head rule's notice as a warning); the weights are kept until `load_init_from`."""
        if self.init_from is not None and self._init_from_weights is None:
            weights, notices = init_weights.weights_to_load(self.init_from, self.net, self.init_from_modules)
            for notice in notices:
                rank_zero_warn(notice)
            self._init_from_weights = weights

    def load_init_from(self) -> None:
        """Load `init_from`'s weights into the chosen modules of the network (nothing without `init_from`)."""
        self.prepare_init_from()
        if self._init_from_weights is not None:
            with torch.no_grad():
                self.net.load_state_dict(self._init_from_weights, strict=False)
            self._init_from_weights = None

    def on_fit_start(self) -> None:
        # After Lightning restored a checkpoint's weights (setup comes before, when trainer.ckpt_path is not yet set).
        if self.init_from is None:
            return
        if self.trainer.ckpt_path is not None:
            self._init_from_weights = None  # resuming: every weight comes from the checkpoint
            return
        if self.trainer.strategy.restore_checkpoint_after_setup:
            raise ValueError(
                f"model.init_from: not supported with {type(self.trainer.strategy).__name__}, which restores "
                "checkpoints after on_fit_start"
            )
        self.load_init_from()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = in_float32(self.loss, logits, batch["mask"])  # any loss, also under mixed precision
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); samples in the batch: {', '.join(map(str, batch['name']))}"
            )
        self.iou["train_iou"].update(logits.detach().argmax(1), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        for name, value in self._loss_terms().items():
            self.log(f"train/loss/{name}", value, batch_size=len(logits))
        return loss

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of whole images under the configured tiling (validation, test, prediction)."""
        return self.tiling(self, images)

    def _eval_step(self, batch: dict, stage: str) -> None:
        logits = self.predict_logits(batch["image"])
        preds = logits.argmax(1)
        self.iou[f"{stage}_iou"].update(preds, batch["mask"])
        self.per_image[f"{stage}_per_image"].update(preds, batch["mask"], batch["index"])
        loss = self.eval_loss[f"{stage}_loss"]
        loss.update(in_float32(self.loss, logits, batch["mask"]), weight=len(logits))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True)
        for name, value in self._loss_terms().items():
            term = self.eval_loss_terms[f"{stage}_{name}"]
            term.update(value, weight=len(logits))
            self.log(f"{stage}/loss/{name}", term, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"prediction": self.predict_logits(batch["image"]).argmax(1), "name": batch["name"]}

    def epoch_iou(self, stage: str) -> torch.Tensor:
        """Per-class IoU accumulated so far in this epoch (`stage`: train, val or test), synced across ranks."""
        return self.iou[f"{stage}_iou"].compute()

    def _log_iou(self, stage: str) -> None:
        metric = self.iou[f"{stage}_iou"]
        images = metric.total_images()
        iou = metric.compute() if images else None
        metric.reset()
        per_image = self.per_image[f"{stage}_per_image"] if f"{stage}_per_image" in self.per_image else None
        counts = per_image.compute() if per_image is not None and images else None  # a collective, like compute()
        if per_image is not None:
            per_image.reset()
        if self.trainer.sanity_checking or iou is None:
            return  # nothing was measured (e.g. the end of an epoch replayed when resuming): nothing to log
        self.latest_iou[stage] = iou.detach().cpu()
        self.latest_iou_step[stage] = int(self.global_step)
        self.latest_num_images[stage] = images
        if counts is not None:
            self.latest_per_image[stage] = tuple(t.detach().cpu() for t in counts)
        if stage == "val":
            self.val_history[int(self.global_step)] = [float(v) for v in iou.double().cpu()]
        self.log(f"{stage}/miou", torch.nanmean(iou).float(), prog_bar=stage != "train")
        for name, value in zip(self.class_names, iou.float(), strict=True):
            self.log(f"{stage}/iou/{name}", value)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # The logging step counts the batches that stepped the optimizer, i.e. the global step. Lightning 2.6 gets it
        # one too high after resuming from some checkpoints (written at an epoch's end or inside a failed step);
        # putting it back keeps a resumed run's metrics.csv aligned with the uninterrupted run's (`tailseg.resume`).
        set_logging_step(self.trainer, self.global_step)

    def on_train_epoch_start(self) -> None:
        self.iou["train_iou"].reset()  # (also after resuming from a checkpoint written at an epoch's last step)

    def on_train_epoch_end(self) -> None:
        self._log_iou("train")

    def on_validation_epoch_end(self) -> None:
        self._log_iou("val")

    def on_test_epoch_end(self) -> None:
        self._log_iou("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["class_frequency"] = self.class_frequency
        checkpoint["val_history"] = {str(step): iou for step, iou in sorted(self.val_history.items())}
        trainer = self._trainer
        if trainer is not None and trainer.training:
            if batches_done_in_epoch(trainer) >= trainer.num_training_batches:
                _zero_train_iou(checkpoint["state_dict"])  # the epoch's IoU is complete: a resumed run starts the next
            elif trainer.world_size > 1:
                self._sum_train_iou_over_ranks(checkpoint["state_dict"])

    def _sum_train_iou_over_ranks(self, state_dict: dict) -> None:
        """Put the training confusion matrix and image count of all ranks together (summed) into a checkpoint's
        state_dict: the checkpoint (written by rank 0) then holds the whole epoch so far. A collective: every rank
        saves the checkpoint, so every rank runs it, at the same step."""
        metric = self.iou["train_iou"]
        with metric.sync_context():  # torchmetrics' own reduction of its states (a sum), undone on leaving
            for name in ("confusion", "num_images"):
                state_dict[f"iou.train_iou.{name}"] = getattr(metric, name).detach().clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_step = checkpoint.get("global_step")
        self.val_history = {int(step): list(iou) for step, iou in (checkpoint.get("val_history") or {}).items()}
        if self.class_frequency is None and checkpoint.get("class_frequency") is not None:
            self.class_frequency, self.class_frequency_source = checkpoint["class_frequency"], "checkpoint"
        state = checkpoint.get("state_dict", {})
        # Buffers that are None until set from the class statistics (the loss's class weights) take the
        # checkpoint's values, so the weights load without the training set.
        for prefix, module in self.named_modules(prefix=""):
            for name, buffer in module._buffers.items():
                key = f"{prefix}.{name}" if prefix else name
                if buffer is None and key in state:
                    setattr(module, name, state[key].clone())
        # Under DDP the checkpoint holds the training confusion matrix of all ranks, summed: rank 0 keeps it and the
        # others start from zero, so the epoch's IoU (a sum over the ranks) counts every crop once.
        if self._trainer is not None and self.trainer.world_size > 1 and self.global_rank != 0:
            _zero_train_iou(state)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
        else:
            optimizer = self.optimizer_factory(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = (
            PolyLR(optimizer, total) if self.scheduler_factory is None else self.scheduler_factory(optimizer, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
