"""Everything that makes defect samples: DFMGAN (learned) and classic generators, behind one interface."""
