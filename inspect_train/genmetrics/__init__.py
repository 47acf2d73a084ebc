"""Judging defect generators against the real base set (`inspect-train evaluate-gen`).

Weight-free, one module per measure: `mask_stats` (mask statistics and their distance to the real ones),
`two_sample` (can a classifier tell real from generated?), `diversity` (spread of samples on the fixed
random net of `random_features`), `contact_sheet` (the picture). With pretrained weights on the machine
(never downloaded; `weights.py`): KID (`kid`, torch-fidelity's Inception-v3 in `inception`) and clustered
LPIPS (`clustered_lpips`, the `lpips` package's networks in `lpips_net`), glued in `evaluate`.
`sources` turns folders and generators into (image, mask) batches; `record` writes results.json,
report.md and TensorBoard.

Submodules are imported where used (some of the libraries take seconds to load).
"""
