"""A learned diffusion defect painter: paints one defect type into a mask on a real good image (`--aug diffusion`).

The same contract as the GAN painter (generators/inpaint): only the defect region is learned, the rest of the
image is a real train/good image. The learner is a small mask-conditioned diffusers `UNet2DModel` trained with
the DDPM objective and sampled in a few DDIM or DPM-Solver steps. Modules: config (YAML presets), networks (the
UNet and the diffusers schedulers), train (the loss and loop), sampler (the in-loop DefectGenerator and the
few-step painting), checkpoint, cli (`gan fit-diffusion`), api (what the rest of the project imports), spec (the
declaration). diffusers is imported only when a diffusion painter is trained or loaded.
"""
