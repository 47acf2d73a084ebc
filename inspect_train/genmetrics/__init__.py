"""Generator quality metrics: KID (realism + diversity) and clustered LPIPS (diversity).

KID uses torch-fidelity's Inception-v3 and its unbiased polynomial-kernel MMD;
LPIPS uses the `lpips` package's networks. Weights are never downloaded here:
they come from an explicit path or the torch hub cache (see `weights.py`).

Submodules are imported where used (the networks' libraries take seconds to load):
`kid.kid_from_features`, `clustered_lpips.clustered_lpips`, `inception.build_inception`, `lpips_net.build_lpips`.
"""
