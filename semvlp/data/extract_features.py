"""`semvlp data features`: region features of a folder of images, written as LXMERT TSV or HDF5.

Two extractors: grid features of a pretrained Hugging Face vision backbone (one region per patch or per pooled
grid cell, its box the cell in image pixels, no object label) and detector regions of a torchvision Faster R-CNN
(the top boxes after NMS, their RoIAlign-pooled box-head features, object labels and scores). Writing appends
batch by batch, so a run that stops is resumed by running it again: images already written are skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from .formats.features import FEATURE_FORMATS
from .formats.hdf5 import DATASETS
from .formats.lxmert_tsv import _encode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OUTPUT_FORMATS = ("tsv", "h5")
NO_LABEL = -1  # records.ImageRecord: -1 = unknown; the masked-region label task ignores such regions


@dataclass
class Regions:
    """One image's regions, boxes in pixels (x1, y1, x2, y2) of the image as loaded (EXIF orientation applied)."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray       # (n, 4) float32
    features: np.ndarray    # (n, feature_dim) float32
    object_ids: np.ndarray  # (n,) int64, NO_LABEL for grid cells
    scores: np.ndarray      # (n,) float32 detector confidence, 1 for grid cells


def list_images(folder) -> list[Path]:
    """The jpg/png files of a folder, sorted; the file name without its suffix is the image id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"images: expected a folder of jpg/png images, {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"images: no {'/'.join(IMAGE_SUFFIXES)} files in {folder}")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(f"images: {seen[path.stem].name} and {path.name} would both get the image id "
                             f"{path.stem!r}; rename one")
        seen[path.stem] = path
    return files


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"images: cannot read {path} as an image ({err})") from err


def _load_batch(paths: list[Path]) -> list[tuple[str, Image.Image]]:
    return [(path.stem, load_image(path)) for path in paths]


def pick_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"semvlp data features needs the package {package!r}: pip install 'semvlp[features]'"
                          ) from err


def _size_field(size, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def processor_input_size(processor) -> tuple[int, int]:
    """(height, width) the backbone was trained at: the processor's crop size if it crops, else its size."""
    for name in ("crop_size", "size"):
        size = getattr(processor, name, None)
        if size is None or (name == "crop_size" and not getattr(processor, "do_center_crop", False)):
            continue
        height, width = _size_field(size, "height"), _size_field(size, "width")
        if height and width:
            return int(height), int(width)
        if _size_field(size, "shortest_edge"):
            side = int(_size_field(size, "shortest_edge"))
            return side, side
    raise ValueError(f"backbone: cannot tell the input size from the image processor {type(processor).__name__}")


class GridExtractor:
    """Grid features of a Hugging Face vision backbone (ViT, DINOv2, CLIP vision, ResNet, ConvNeXt, ...).

    The whole image is resized to the backbone's input size (no crop, so every cell maps back to the image),
    then normalised by the processor. Token models give one region per patch (the class and register tokens are
    dropped), convolutional ones one per cell of the last feature map; with `grid` the map is average-pooled to
    grid x grid cells."""

    def __init__(self, backbone, grid: int | None = None, device: str | None = None):
        transformers = _require("transformers")
        if grid is not None and grid < 1:
            raise ValueError(f"grid: expected a positive cell count per side, got {grid}")
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(backbone)
            model = transformers.AutoModel.from_pretrained(backbone)
        except OSError as err:
            raise ValueError(f"backbone: expected a model folder with an image processor, or a Hugging Face hub "
                             f"id, could not load {backbone} ({err})") from err
        self.model = getattr(model, "vision_model", model).eval()  # CLIP: its vision tower
        self.device = pick_device(device)
        self.model.to(self.device)
        self.grid = grid
        self.input_size = processor_input_size(self.processor)
        config = getattr(model.config, "vision_config", model.config)
        self.patch_size = getattr(config, "patch_size", None)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, channels, rows, cols) from the last hidden state."""
        hidden = self.model(pixel_values=pixel_values).last_hidden_state
        if hidden.ndim == 4:
            return hidden
        if self.patch_size is None:
            raise ValueError("backbone: a token model without config.patch_size; cannot place its patches")
        rows, cols = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        patches = hidden[:, -rows * cols:]  # the class (and register) tokens come first
        return patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], rows, cols)

    @torch.inference_mode()
    def __call__(self, batch: list[tuple[str, Image.Image]]) -> list[Regions]:
        height, width = self.input_size
        resized = [image.resize((width, height), Image.BICUBIC) for _, image in batch]
        pixels = self.processor(images=resized, do_resize=False, do_center_crop=False, return_tensors="pt")
        fmap = self.feature_map(pixels["pixel_values"].to(self.device))
        if self.grid is not None:
            fmap = torch.nn.functional.adaptive_avg_pool2d(fmap, self.grid)
        rows, cols = fmap.shape[-2:]
        features = fmap.flatten(2).transpose(1, 2).float().cpu().numpy()
        out = []
        for (image_id, image), feats in zip(batch, features):
            boxes = cell_boxes(rows, cols, image.width, image.height)
            out.append(Regions(image_id, image.width, image.height, boxes, np.ascontiguousarray(feats),
                               np.full(len(boxes), NO_LABEL, np.int64), np.ones(len(boxes), np.float32)))
        return out


def cell_boxes(rows: int, cols: int, width: int, height: int) -> np.ndarray:
    """(rows * cols, 4) pixel boxes of a rows x cols grid over a width x height image, row-major."""
    xs, ys = np.linspace(0, width, cols + 1), np.linspace(0, height, rows + 1)
    y1, x1 = np.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y2, x2 = np.meshgrid(ys[1:], xs[1:], indexing="ij")
    return np.stack([x1, y1, x2, y2], axis=-1).reshape(-1, 4).astype(np.float32)


class DetectorExtractor:
    """Regions of torchvision's `fasterrcnn_resnet50_fpn` loaded from a state-dict file (the class count is read
    from it): the `max_regions` best boxes after NMS scoring above `score_threshold`, each with the 1024-d
    box-head feature of its RoIAlign-pooled FPN features, its class index (0 is background and never written) and
    score. An image where nothing is detected gets one whole-image region with label -1 and score 0. Images are
    resized so that their short side is `min_size` (the long side at most `max_size`), as the detector was
    trained (torchvision's defaults: 800 and 1333)."""

    def __init__(self, weights, max_regions: int = 36, score_threshold: float = 0.2, device: str | None = None,
                 min_size: int = 800, max_size: int = 1333):
        detection = _require("torchvision.models.detection")
        if max_regions < 1:
            raise ValueError(f"max_regions: expected a positive number of regions, got {max_regions}")
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold: expected a value in [0, 1), got {score_threshold}")
        if not Path(weights).is_file():
            raise ValueError(f"detector: expected a Faster R-CNN state-dict file, {weights} does not exist")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        key = "roi_heads.box_predictor.cls_score.weight"
        if not isinstance(state, dict) or key not in state:
            raise ValueError(f"detector: {weights} is not a fasterrcnn_resnet50_fpn state dict (no {key})")
        model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                  num_classes=state[key].shape[0], box_score_thresh=score_threshold,
                                                  box_detections_per_img=max_regions, min_size=min_size,
                                                  max_size=max_size)
        model.load_state_dict(state)
        self.device = pick_device(device)
        self.model = model.eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, batch: list[tuple[str, Image.Image]]) -> list[Regions]:
        functional = _require("torchvision.transforms.functional")
        model = self.model
        tensors = [functional.to_tensor(image).to(self.device) for _, image in batch]
        images, _ = model.transform(tensors)
        fmaps = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, fmaps)
        detections, _ = model.roi_heads(fmaps, proposals, images.image_sizes)
        boxes = [d["boxes"] for d in detections]
        pooled = model.roi_heads.box_roi_pool(fmaps, boxes, images.image_sizes)
        features = model.roi_heads.box_head(pooled).float().split([len(b) for b in boxes])
        originals = [(image.height, image.width) for _, image in batch]
        detections = model.transform.postprocess(detections, images.image_sizes, originals)
        return [self._regions(image_id, image, d, feats)
                for (image_id, image), d, feats in zip(batch, detections, features)]

    def _regions(self, image_id, image, detection, features) -> Regions:
        if len(detection["boxes"]) == 0:
            whole = torch.tensor([[0.0, 0.0, image.width, image.height]], device=self.device)
            feats = self._box_features(image, whole)
            return Regions(image_id, image.width, image.height, whole.cpu().numpy(), feats,
                           np.full(1, NO_LABEL, np.int64), np.zeros(1, np.float32))
        return Regions(image_id, image.width, image.height, detection["boxes"].float().cpu().numpy(),
                       features.cpu().numpy(), detection["labels"].cpu().numpy().astype(np.int64),
                       detection["scores"].float().cpu().numpy())

    def _box_features(self, image, boxes: torch.Tensor) -> np.ndarray:
        functional = _require("torchvision.transforms.functional")
        images, _ = self.model.transform([functional.to_tensor(image).to(self.device)])
        scale = torch.tensor([images.image_sizes[0][1] / image.width, images.image_sizes[0][0] / image.height] * 2,
                             device=self.device)
        fmaps = self.model.backbone(images.tensors)
        pooled = self.model.roi_heads.box_roi_pool(fmaps, [boxes * scale], images.image_sizes)
        return self.model.roi_heads.box_head(pooled).float().cpu().numpy()


class TsvWriter:
    """Appends LXMERT TSV lines; the ids of the complete lines already there are `done`. A last line cut off by
    a stopped run is removed so that its image is extracted again."""

    def __init__(self, path: Path):
        self.done: set[str] = set()
        if path.exists():
            with open(path, "rb+") as f:
                complete = 0
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    complete += len(line)
                    self.done.add(next(csv.reader([line.decode("utf-8").rstrip("\r\n")], delimiter="\t"))[0])
                f.truncate(complete)
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file, delimiter="\t", lineterminator="\n")

    def write(self, regions: list[Regions]) -> None:
        for r in regions:
            n = len(r.boxes)
            self.writer.writerow([r.image_id, r.height, r.width, _encode(r.object_ids, np.int64),
                                  _encode(r.scores, np.float32), _encode(np.full(n, NO_LABEL), np.int64),
                                  _encode(np.zeros(n), np.float32), n, _encode(r.boxes, np.float32),
                                  _encode(r.features, np.float32)])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class Hdf5Writer:
    """Adds one group per image (the datasets `formats.hdf5` reads, plus `objects_conf`); the groups already
    complete are `done`, an incomplete one left by a stopped run is removed."""

    def __init__(self, path: Path):
        try:
            self.file = h5py.File(path, "a")
        except OSError as err:
            raise ValueError(f"out: cannot open {path} to append HDF5 records ({err})") from err
        self.done = set()
        for image_id in list(self.file):
            group = self.file[image_id]
            if all(name in group for name in DATASETS) and {"img_h", "img_w"} <= set(group.attrs):
                self.done.add(image_id)
            else:
                del self.file[image_id]

    def write(self, regions: list[Regions]) -> None:
        for r in regions:
            group = self.file.create_group(r.image_id)
            group["features"], group["boxes"] = r.features, r.boxes
            group["objects_id"], group["objects_conf"] = r.object_ids, r.scores
            group["attrs_id"] = np.full(len(r.boxes), NO_LABEL, np.int64)
            group.attrs["img_h"], group.attrs["img_w"] = r.height, r.width  # last: marks the group complete
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class ExtractionSummary:
    path: Path
    written: int
    skipped: int  # already in the output


def extract_features(images, out, extractor, fmt: str = "tsv", batch_size: int = 8, workers: int = 0,
                     progress: bool = True) -> ExtractionSummary:
    """Runs `extractor` (a list of (image id, PIL image) -> list of Regions) over the images of a folder and
    appends the regions to `out`'s feature file of format `fmt`, where `open_features(out)` reads them. Images
    whose id is already in that file are skipped."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"fmt: expected one of {list(OUTPUT_FORMATS)}, got {fmt!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive number of images, got {batch_size}")
    files = list_images(images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FEATURE_FORMATS[fmt][0]
    writer = TsvWriter(path) if fmt == "tsv" else Hdf5Writer(path)
    todo = [f for f in files if f.stem not in writer.done]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers, collate_fn=_load_batch)
    try:
        with tqdm(total=len(todo), unit="img", desc="features", disable=not progress) as bar:
            for batch in loader:
                writer.write(extractor(batch))
                bar.update(len(batch))
    finally:
        writer.close()
    return ExtractionSummary(path, len(todo), len(files) - len(todo))
