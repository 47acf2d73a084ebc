"""A learned defect painter: paints one defect type into a mask on a real good image (`--aug inpaint`).

Only the defect is learned; the background is a real train/good image, so the painter is small and cheap to
train on a CPU. Modules: config (YAML presets), masks (where to paint: deformed base masks, DFMGAN masks, user
masks), networks (painter and discriminators), train (the losses and loop), sampler (the in-loop
DefectGenerator), api (what the rest of the project imports).
"""
