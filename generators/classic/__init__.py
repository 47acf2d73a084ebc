"""Non-learned defect generators (crop-paste, cut-paste, Perlin) and classic augmentation.

All run with torch ops on the device they were built for and draw every random
number from the torch.Generator passed to `sample`, so a seeded run repeats.
Build them by name with `generators.registry.create_generator`.
"""
