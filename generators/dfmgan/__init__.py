"""DFMGAN: a two-stage few-shot defect generator (StyleGAN2 backbone + defect-aware residual blocks).

Public entry points live in `generators.dfmgan.api`.
"""
