"""The views of contrastive refinement on arrays held on the device: MIM-Refiner's two global crops and optional
small local crops, each with its BYOL photometric operations (the stream path draws the same views in its
DataLoader workers: pipeline/data/stream.py `multiview_transform`)."""
from __future__ import annotations

from typing import Callable

import torch

from pipeline.data.augment import BYOL_VIEWS, photometric as photometric_ops, random_resized_crop
from pipeline.data.loader import DeviceImages

Views = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]  # (views [B, C, H, W] each, labels [B], indices [B])


def device_views(data: DeviceImages, global_scale_min: float, local_crops: int, local_scale: tuple[float, float],
                 local_size: int | None = None, photometric: bool = True) -> Callable[[torch.Tensor], Views]:
    """fetch(indices) -> views of arrays on the device: two global RandomResizedCrops (scale (min, 1)) at the
    input size and `local_crops` small ones (`local_scale`) at `local_size` pixels (None = the input size).

    With `photometric`, each view then gets its BYOL photometric operations (`augment.BYOL_VIEWS`: global view 0
    always blurred, view 1 blurred with p=0.1 and solarized with p=0.2, local crops blurred with p=0.5; all with
    colour jitter and grayscale), as the stream's views. They are drawn from the global generator after all the
    crops, so a seed gives the same crops with or without them."""
    recipes = [BYOL_VIEWS["global0"], BYOL_VIEWS["global1"]] + [BYOL_VIEWS["local"]] * local_crops

    def fetch(idx: torch.Tensor) -> Views:
        # views are the step's inputs: made in fp32 under any autocast (bf16 broke the blend of a blurred view)
        with torch.no_grad(), torch.autocast(data.labels.device.type, enabled=False):
            x = data.batch(idx)
            views = [random_resized_crop(x, (global_scale_min, 1.0)) for _ in range(2)]
            views += [random_resized_crop(x, local_scale, size=local_size) for _ in range(local_crops)]
            if photometric:
                views = [photometric_ops(v, data.pixel_mean, data.pixel_std, r.jitter_p, r.blur_p, r.solarize_p,
                                         r.gray_p) for v, r in zip(views, recipes)]
        return views, data.labels[idx], idx

    return fetch


def loader_views(batch: Views) -> Views:
    """fetch((views, labels, indices)) -> the same: the stream's workers drew MIM-Refiner's views."""
    return batch
