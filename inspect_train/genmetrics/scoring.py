"""One defect type's table in `evaluate-gen`: the real base set first, then each source, every measure that needs
no pretrained weights (and KID / clustered LPIPS where their networks were found)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from inspect_train.genmetrics.diversity import mean_pairwise_distance
from inspect_train.genmetrics.evaluate import score_pair
from inspect_train.genmetrics.mask_stats import mask_distance, mask_features, mask_iou_diversity, summarize
from inspect_train.genmetrics.two_sample import classifier_features, two_sample_test

if TYPE_CHECKING:
    from inspect_train.genmetrics.generator_sources import Source


def score_defect(defect: str, real, sources: list[Source], extractor, nets: tuple, args,
                 real_label: str = "real base set") -> tuple[list[dict], list]:
    """The table rows of one defect type (the real base set first, then each source) and the contact sheet's
    blocks (label, images, masks)."""
    real_features = mask_features(real.masks)
    real_conv = extractor(real.images, real.masks)
    real_x, feature_blocks = classifier_features(real_conv, real.masks, real_features)
    real_diversity = mean_pairwise_distance(real_conv)
    rows = [{"source": "real base set", "kind": "real", "n": len(real), "mask": summarize(real_features),
             "mask_distance": {"value": 0.0, "per_feature": {}, "skipped": []},
             "diversity": real_diversity, "mask_diversity": mask_iou_diversity(real.masks)}]
    blocks = [(real_label, real.images, real.masks)]
    for source in sources:
        started = time.time()
        drawn = source.draw(defect, args.n)
        if drawn is None:
            continue
        images, masks = drawn
        seconds = time.time() - started
        features = mask_features(masks)
        conv = extractor(images, masks)
        x, _ = classifier_features(conv, masks, features)
        diversity = mean_pairwise_distance(conv)
        row = {"source": source.name, "kind": source.record["kind"], "n": int(images.shape[0]),
               "sample_seconds": round(seconds, 2), "mask": summarize(features),
               "mask_distance": mask_distance(real_features, features),
               "two_sample": two_sample_test(real_x, x, blocks=feature_blocks, folds=args.folds,
                                             repeats=args.repeats, seed=args.seed),
               "diversity": diversity, "mask_diversity": mask_iou_diversity(masks),
               "diversity_vs_real": diversity / real_diversity if diversity is not None and real_diversity else None}
        if any(net is not None for net in nets):
            row.update(score_pair(images, real.images, *nets, kid_subsets=args.kid_subsets,
                                  kid_max_subset_size=args.kid_subset_size,
                                  max_per_cluster=args.max_per_cluster or None, seed=args.seed, batch=args.batch))
        rows.append(row)
        accuracy, distance = row["two_sample"]["accuracy"], row["mask_distance"]["value"]
        accuracy = "n/a" if accuracy is None else f"{accuracy:.2f}"
        print(f"  {defect}: {source.name}: {row['n']} samples in {seconds:.1f} s; real-vs-generated accuracy "
              f"{accuracy}, mask distance {'n/a' if distance is None else f'{distance:.2f}'}")
        blocks.append((f"{source.name} ({row['n']} samples; real-vs-generated accuracy {accuracy})", images, masks))
    return rows, blocks
